'use strict'
// The public entry point: the compiled TypeScript API.
module.exports = require('./dist/index.js')
