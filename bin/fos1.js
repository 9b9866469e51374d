#!/usr/bin/env node
// The `fos1` command (package.json "bin"): runs cli/main.ts through tsx, the TypeScript
// loader fos1 uses everywhere, so there is no build step.
'use strict';
require('tsx/cjs/api').register();
const { runCli, processIo } = require('../cli/main.ts');
runCli(process.argv.slice(2), processIo()).then((code) => {
  process.exitCode = code;
});
