// The public typing of h3node (generated from src/ by tsc into dist/).
export * from './dist/index'
