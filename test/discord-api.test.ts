import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test, type TestContext } from 'node:test';
import { DiscordAPIError, REST } from '@discordjs/rest';
import { Routes } from 'discord-api-types/v10';
import { startDiscordStandIn, type DiscordStandIn, type DiscordStandInOptions } from '../src/standins/discord-api';

const APPLICATION_ID = '1100000000000000001';
const BOT_TOKEN = 'stand-in-bot-token';
const CHANNEL_ID = '1200000000000000002';
// A 1x1 PNG.
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=',
  'base64',
);

interface ApiMessage {
  id: string;
  content: string;
  flags: number;
  edited_timestamp: string | null;
  attachments: Array<{ id: string; filename: string; size: number; content_type: string; url: string }>;
}

async function startStandIn(t: TestContext, options: Partial<DiscordStandInOptions> = {}) {
  const standIn = await startDiscordStandIn({ applicationId: APPLICATION_ID, botToken: BOT_TOKEN, ...options });
  t.after(() => standIn.close());
  const rest = new REST({ api: standIn.url, version: '10' }).setToken(BOT_TOKEN);
  return { standIn, rest };
}

function deferredInteraction(standIn: DiscordStandIn): string {
  const { token } = standIn.issueInteraction({ channelId: CHANNEL_ID });
  standIn.acknowledge(token, { type: 5 });
  return token;
}

function discordError(status: number, code: number) {
  return (error: unknown) => {
    assert.ok(error instanceof DiscordAPIError, `expected a DiscordAPIError, got ${String(error)}`);
    assert.equal(error.status, status);
    assert.equal(error.code, code);
    return true;
  };
}

test('editing the original with an embed and a PNG records the bytes and stores them on the message', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  const token = deferredInteraction(standIn);

  const reply = (await rest.patch(Routes.webhookMessage(APPLICATION_ID, token), {
    auth: false,
    body: {
      content: 'Generated',
      embeds: [{ title: 'a red fox', image: { url: 'attachment://fox.png' }, footer: { text: 'seed 42' } }],
      attachments: [{ id: 0, filename: 'fox.png' }],
    },
    files: [{ name: 'fox.png', data: PNG, contentType: 'image/png' }],
  })) as ApiMessage;

  const call = standIn.calls.at(-1);
  assert.equal(call?.route, 'PATCH /webhooks/:app/:token/messages/@original');
  assert.equal(call.path, `/webhooks/${APPLICATION_ID}/${token}/messages/@original`);
  assert.equal(call.status, 200);
  assert.equal(call.token, token);
  assert.equal(call.authorization, null);
  assert.deepEqual(call.body, {
    content: 'Generated',
    embeds: [{ title: 'a red fox', image: { url: 'attachment://fox.png' }, footer: { text: 'seed 42' } }],
    attachments: [{ id: 0, filename: 'fox.png' }],
  });
  assert.deepEqual(
    call.files.map(({ field, filename, contentType }) => ({ field, filename, contentType })),
    [{ field: 'files[0]', filename: 'fox.png', contentType: 'image/png' }],
  );
  assert.ok(call.files[0]?.data.equals(PNG));

  const original = standIn.originalMessage(token);
  assert.equal(original?.content, 'Generated');
  assert.equal(original.editCount, 1);
  assert.equal(original.flags, 0, 'the loading flag of the deferred response is gone');
  assert.equal(original.embeds.length, 1);
  assert.deepEqual(
    original.attachments.map(({ filename, size, contentType }) => ({ filename, size, contentType })),
    [{ filename: 'fox.png', size: PNG.length, contentType: 'image/png' }],
  );
  assert.ok(original.files[0]?.data.equals(PNG));

  assert.equal(reply.id, original.id);
  assert.match(reply.id, /^\d{17,20}$/);
  assert.notEqual(reply.edited_timestamp, null);
  assert.match(reply.attachments[0]?.url ?? '', /^https:\/\/cdn\.discordapp\.com\/attachments\/.+\/fox\.png$/);
});

test('a later edit keeps the image unless it sends an empty attachments list', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  const token = deferredInteraction(standIn);
  const route = Routes.webhookMessage(APPLICATION_ID, token);
  await rest.patch(route, {
    auth: false,
    body: { attachments: [{ id: 0, filename: 'fox.png' }] },
    files: [{ name: 'fox.png', data: PNG, contentType: 'image/png' }],
  });

  await rest.patch(route, { auth: false, body: { content: 'Still here' } });
  assert.equal(standIn.originalMessage(token)?.attachments.length, 1);

  await rest.patch(route, { auth: false, body: { content: 'Image removed', attachments: [] } });
  const original = standIn.originalMessage(token);
  assert.equal(original?.attachments.length, 0);
  assert.equal(original.files.length, 0);
  assert.equal(original.editCount, 3);
});

test('acknowledging with a message creates the original, and a response Discord would refuse throws', async (t) => {
  const { standIn } = await startStandIn(t);
  const { token } = standIn.issueInteraction({ channelId: CHANNEL_ID, ephemeral: true });

  assert.throws(() => standIn.acknowledge(token, { type: 4, data: {} }), /Cannot send an empty message/);
  standIn.acknowledge(token, { type: 4, data: { content: 'You already have 2 requests queued' } });
  assert.throws(() => standIn.acknowledge(token, { type: 5 }), /already been acknowledged/);

  const original = standIn.originalMessage(token);
  assert.equal(original?.content, 'You already have 2 requests queued');
  assert.equal(original.flags, 64);
  assert.equal(original.editCount, 0);
});

test('an expired token is refused with 401 and code 50027', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  const token = deferredInteraction(standIn);
  standIn.expireToken(token);

  await assert.rejects(
    rest.patch(Routes.webhookMessage(APPLICATION_ID, token), { auth: false, body: { content: 'Too late' } }),
    discordError(401, 50027),
  );
  assert.equal(standIn.calls.at(-1)?.status, 401);
  assert.equal(standIn.originalMessage(token)?.editCount, 0);
});

test('a token older than its lifetime is refused like an expired one', async (t) => {
  const { standIn, rest } = await startStandIn(t, { tokenLifetimeMs: 30 });
  const token = deferredInteraction(standIn);
  await sleep(60);

  await assert.rejects(
    rest.post(Routes.webhook(APPLICATION_ID, token), { auth: false, body: { content: 'Too late' } }),
    discordError(401, 50027),
  );
});

test('a token that was never issued is refused, and an unknown application is an unknown webhook', async (t) => {
  const { rest } = await startStandIn(t);

  await assert.rejects(
    rest.patch(Routes.webhookMessage(APPLICATION_ID, 'never-issued'), { auth: false, body: { content: 'Hi' } }),
    discordError(401, 50027),
  );
  await assert.rejects(
    rest.patch(Routes.webhookMessage('999', 'never-issued'), { auth: false, body: { content: 'Hi' } }),
    discordError(404, 10015),
  );
});

test('editing the original before the interaction is acknowledged is an unknown message', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  const { token } = standIn.issueInteraction({ channelId: CHANNEL_ID });

  await assert.rejects(
    rest.patch(Routes.webhookMessage(APPLICATION_ID, token), { auth: false, body: { content: 'Early' } }),
    discordError(404, 10008),
  );
});

test('an unknown route is answered 404 with the body Discord uses', async (t) => {
  const { standIn, rest } = await startStandIn(t);

  await assert.rejects(rest.get('/nowhere/at-all', { auth: false }), (error: unknown) => {
    assert.ok(error instanceof DiscordAPIError);
    assert.equal(error.status, 404);
    assert.deepEqual(error.rawError, { message: '404: Not Found', code: 0 });
    return true;
  });
  assert.equal(standIn.calls.at(-1)?.route, 'GET /nowhere/at-all');
});

test('a multipart attachment that names a missing file is refused with 400', async (t) => {
  const { standIn } = await startStandIn(t);
  const token = deferredInteraction(standIn);
  const form = new FormData();
  form.append('payload_json', JSON.stringify({ content: 'Fox', attachments: [{ id: 1, filename: 'fox.png' }] }));
  form.append('files[0]', new Blob([PNG], { type: 'image/png' }), 'fox.png');

  const response = await fetch(`${standIn.url}/v10/webhooks/${APPLICATION_ID}/${token}/messages/%40original`, {
    method: 'PATCH',
    body: form,
  });

  assert.equal(response.status, 400);
  const body = (await response.json()) as { code: number; errors: Record<string, unknown> };
  assert.equal(body.code, 50035);
  assert.ok('attachments' in body.errors);
  const call = standIn.calls.at(-1);
  assert.equal(call?.status, 400);
  assert.equal(call.files.length, 1);
  assert.equal(standIn.originalMessage(token)?.editCount, 0);
});

test('a multipart body without payload_json, or cut short, is refused with 400', async (t) => {
  const { standIn } = await startStandIn(t);
  const token = deferredInteraction(standIn);
  const url = `${standIn.url}/v10/webhooks/${APPLICATION_ID}/${token}/messages/%40original`;
  const withoutPayload = new FormData();
  withoutPayload.append('files[0]', new Blob([PNG], { type: 'image/png' }), 'fox.png');
  const cutShort = '--cut\r\nContent-Disposition: form-data; name="payload_json"\r\n\r\n{"content":"Fox"}';

  const responses = await Promise.all([
    fetch(url, { method: 'PATCH', body: withoutPayload }),
    fetch(url, { method: 'PATCH', body: cutShort, headers: { 'content-type': 'multipart/form-data; boundary=cut' } }),
  ]);

  for (const response of responses) {
    assert.equal(response.status, 400);
    assert.equal(((await response.json()) as { code: number }).code, 50035);
  }
});

test('content over 2000 characters is refused naming the content field', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  const token = deferredInteraction(standIn);

  await assert.rejects(
    rest.patch(Routes.webhookMessage(APPLICATION_ID, token), { auth: false, body: { content: 'x'.repeat(2001) } }),
    (error: unknown) => {
      assert.ok(error instanceof DiscordAPIError);
      assert.equal(error.status, 400);
      assert.equal(error.code, 50035);
      assert.match(error.message, /content\[BASE_TYPE_MAX_LENGTH\]: Must be 2000 or fewer in length\./);
      return true;
    },
  );
});

test('a button without a custom_id and an oversized embed are refused naming the fields', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  const token = deferredInteraction(standIn);
  const body = {
    embeds: [{ title: 't'.repeat(257) }],
    components: [{ type: 1, components: [{ type: 2, style: 4, label: 'Cancel' }] }],
  };

  await assert.rejects(rest.patch(Routes.webhookMessage(APPLICATION_ID, token), { auth: false, body }), (error) => {
    assert.ok(error instanceof DiscordAPIError);
    assert.equal(error.status, 400);
    assert.match(error.message, /embeds\[0\]\.title\[BASE_TYPE_MAX_LENGTH\]/);
    assert.match(error.message, /components\[0\]\.components\[0\]\.custom_id\[BASE_TYPE_REQUIRED\]/);
    return true;
  });
});

test('posting to a channel requires the bot token', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  const wrongToken = new REST({ api: standIn.url, version: '10' }).setToken('not-the-bot-token');
  const route = Routes.channelMessages(CHANNEL_ID);

  await assert.rejects(rest.post(route, { auth: false, body: { content: 'Hi' } }), discordError(401, 0));
  await assert.rejects(wrongToken.post(route, { body: { content: 'Hi' } }), discordError(401, 0));
  assert.deepEqual(standIn.channelMessages(CHANNEL_ID), []);

  await rest.post(route, { body: { content: 'Queue is open' } });
  assert.deepEqual(
    standIn.channelMessages(CHANNEL_ID).map((message) => message.content),
    ['Queue is open'],
  );
  assert.equal(standIn.calls.at(-1)?.authorization, `Bot ${BOT_TOKEN}`);
});

test('the first followup to a deferred response fills it, later followups are new channel messages', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  const token = deferredInteraction(standIn);

  const first = (await rest.post(Routes.webhook(APPLICATION_ID, token), {
    auth: false,
    body: { content: 'Queued at position 1' },
  })) as ApiMessage;
  const second = (await rest.post(Routes.webhook(APPLICATION_ID, token), {
    auth: false,
    body: { content: 'Done' },
  })) as ApiMessage;

  assert.equal(first.id, standIn.originalMessage(token)?.id);
  assert.equal(standIn.originalMessage(token)?.content, 'Queued at position 1');
  assert.deepEqual(
    standIn.channelMessages(CHANNEL_ID).map((message) => message.id),
    [second.id],
  );
});

test('waitFor resolves with a call made after it was asked', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  const token = deferredInteraction(standIn);
  const edited = standIn.waitFor((call) => call.route.startsWith('PATCH /webhooks/') && call.status === 200);

  setTimeout(() => {
    void rest.patch(Routes.webhookMessage(APPLICATION_ID, token), { auth: false, body: { content: 'Generating' } });
  }, 20);

  const call = await edited;
  assert.deepEqual(call.body, { content: 'Generating' });
});

test('waitFor times out with a clear error listing the calls it saw', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  await rest.get('/nowhere', { auth: false }).catch(() => undefined);

  await assert.rejects(
    standIn.waitFor((call) => call.method === 'DELETE', 50),
    (error: unknown) => {
      assert.ok(error instanceof Error);
      assert.match(error.message, /no matching Discord call within 50 ms/);
      assert.match(error.message, /GET \/nowhere -> 404/);
      return true;
    },
  );
});

test('injected 500 and 429 failures are recorded and retried by the REST client', async (t) => {
  const { standIn, rest } = await startStandIn(t);
  const token = deferredInteraction(standIn);
  standIn.failNext(1, 500, 'PATCH /webhooks');
  standIn.failNext(1, 429, 'PATCH /webhooks', 0.05);

  await rest.patch(Routes.webhookMessage(APPLICATION_ID, token), { auth: false, body: { content: 'Eventually' } });

  assert.deepEqual(
    standIn.calls.map((call) => call.status),
    [500, 429, 200],
  );
  assert.equal(standIn.originalMessage(token)?.editCount, 1);
});

test('registering commands checks their names and keeps ids across overwrites', async (t) => {
  const { rest } = await startStandIn(t);
  const route = Routes.applicationGuildCommands(APPLICATION_ID, '1300000000000000003');
  const generate = {
    name: 'generate',
    description: 'Turn a prompt into an image',
    options: [{ type: 3, name: 'prompt', description: 'What to draw', required: true }],
  };

  await assert.rejects(rest.put(route, { body: [{ ...generate, name: 'Generate' }] }), (error: unknown) => {
    assert.ok(error instanceof DiscordAPIError);
    assert.equal(error.status, 400);
    assert.match(error.message, /^0\.name\[APPLICATION_COMMAND_INVALID_NAME\]: Command name is invalid$/m);
    return true;
  });

  const [first] = (await rest.put(route, { body: [generate] })) as Array<{ id: string; name: string }>;
  const [second] = (await rest.put(route, { body: [generate] })) as Array<{ id: string; name: string }>;
  assert.equal(first?.name, 'generate');
  assert.match(first.id, /^\d+$/);
  assert.equal(second?.id, first.id);
});
