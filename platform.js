'use strict'
/** The napi-rs platform suffix of this process: linux-x64-gnu, darwin-arm64, win32-x64-msvc, ... */
function platformSuffix() {
  const { platform, arch } = process
  if (platform === 'win32') return `win32-${arch}-msvc`
  if (platform === 'linux') {
    const glibc = process.report?.getReport?.()?.header?.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  return `${platform}-${arch}`
}
module.exports = { platformSuffix }
