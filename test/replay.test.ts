import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { Worker } from '@temporalio/worker';

import { workflowBundle } from './helpers/bot-harness';

// Histories recorded from real runs (RECORD_HISTORIES=<label> npm test -- <file>) are replayed
// against the current workflow code: a change that would break running workflows fails here.
const HISTORIES = join(__dirname, 'histories');

test('recorded channel and image-server workflow histories replay against the current code', async () => {
  const files = readdirSync(HISTORIES).filter((name) => name.endsWith('.json'));
  assert.ok(files.length >= 4, `expected recorded histories in ${HISTORIES}`);
  assert.ok(files.some((name) => name.includes('-channel-')));
  assert.ok(files.some((name) => name.includes('-image-servers-')));

  const histories = files.map((name) => ({
    workflowId: name.replace(/\.json$/, ''),
    history: historyFromJSON(JSON.parse(readFileSync(join(HISTORIES, name), 'utf8'))),
  }));

  const failures: string[] = [];
  for await (const result of Worker.runReplayHistories({ workflowBundle: await workflowBundle() }, histories)) {
    if (result.error !== undefined) {
      failures.push(`${result.workflowId}: ${result.error.message}`);
    }
  }

  assert.deepEqual(failures, []);
});
