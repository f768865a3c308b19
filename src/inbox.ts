/**
 * The queue behind `for await (const x of server)`: values wait for a
 * reader, readers wait for values, and `end()` finishes waiting readers
 * once the queued values are read.
 *
 * @internal
 * @module
 */
export class Inbox<T> {
  #items: T[] = []
  #waiters: ((r: IteratorResult<T>) => void)[] = []
  #ended = false

  /** Hands `value` to a waiting reader, or queues it. */
  push(value: T): void {
    const w = this.#waiters.shift()
    if (w) w({ value, done: false })
    else this.#items.push(value)
  }

  /** No more values: readers finish once the queue is empty. */
  end(): void {
    this.#ended = true
    for (const w of this.#waiters.splice(0)) w({ value: undefined, done: true })
  }

  /** Takes every value not read yet. */
  drain(): T[] {
    return this.#items.splice(0)
  }

  /** The next value, or done once ended and empty. */
  next(): Promise<IteratorResult<T>> {
    if (this.#items.length > 0) return Promise.resolve({ value: this.#items.shift()!, done: false })
    if (this.#ended) return Promise.resolve({ value: undefined, done: true })
    return new Promise((resolve) => this.#waiters.push(resolve))
  }
}
