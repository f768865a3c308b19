/**
 * Development certificates: short-lived ECDSA P-256 self-signed
 * certificates that browsers accept through `serverCertificateHashes`.
 *
 * @module
 */
import { fromNative } from './errors'
import { native } from './native'

/** A generated development certificate. */
export interface DevCertificate {
  /** Certificate, PEM. */
  readonly cert: string
  /** Private key (PKCS#8), PEM. */
  readonly key: string
  /** SHA-256 of the DER certificate, hex. */
  readonly sha256: string
  /** SHA-256 of the DER certificate, raw bytes: the `value` of a `serverCertificateHashes` entry. */
  readonly hash: Uint8Array
  /** When the certificate expires. */
  readonly notAfter: Date
}

/** Options of {@link generateDevCertificate}. */
export interface DevCertificateOptions {
  /** Validity in days, 1 to 14 (browsers refuse pinned certificates valid longer). Default `14`. */
  days?: number
  /** Extra DNS names or IP addresses besides localhost, 127.0.0.1 and ::1. */
  names?: string[]
}

/**
 * Generates a development certificate.
 *
 * @example
 * ```ts
 * import { generateDevCertificate } from 'h3node'
 * const { cert, key, sha256 } = generateDevCertificate({ days: 7 })
 * ```
 */
export function generateDevCertificate(options: DevCertificateOptions = {}): DevCertificate {
  try {
    const [cert, key, sha256, notAfter] = native.generateDevCert(options.days ?? 14, options.names ?? [])
    return { cert, key, sha256, hash: Buffer.from(sha256, 'hex'), notAfter: new Date(Number(notAfter) * 1000) }
  } catch (e) {
    throw fromNative(e)
  }
}

/** SHA-256 (hex) of the first certificate in a PEM chain, or `null` if none parses. */
export function certificateSha256(certPem: string | Buffer): string | null {
  return native.certificateSha256(Buffer.from(certPem)) ?? null
}
