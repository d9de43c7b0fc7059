import assert from 'node:assert/strict';
import { test } from 'node:test';

import { COMMANDS, registerCommands } from '../scripts/register-commands';
import { DiscordOutput } from '../src/discord/discord-output';
import { startDiscordStandIn } from '../src/standins/discord-api';

const APPLICATION_ID = '400000000000000001';

test('/generate and /queue register globally and per guild, and Discord accepts their shape', async () => {
  const discord = await startDiscordStandIn({ applicationId: APPLICATION_ID, botToken: 'register-token' });
  try {
    const output = new DiscordOutput({ apiBase: discord.url, botToken: 'register-token' });
    const global = (await registerCommands(output, APPLICATION_ID)) as Array<{ name: string; id: string }>;
    assert.deepEqual(
      global.map((command) => command.name),
      ['generate', 'queue'],
    );

    await registerCommands(output, APPLICATION_ID, '200000000000000001');
    const puts = discord.calls.filter((call) => call.method === 'PUT');
    assert.deepEqual(
      puts.map((call) => [call.route, call.status, call.authorization]),
      [
        ['PUT /applications/:app/commands', 200, 'Bot register-token'],
        ['PUT /applications/:app/guilds/:guild/commands', 200, 'Bot register-token'],
      ],
    );
    assert.deepEqual(puts[0]?.body, COMMANDS);
  } finally {
    await discord.close();
  }
});

test('registering without the bot token is refused by Discord with 401', async () => {
  const discord = await startDiscordStandIn({ applicationId: APPLICATION_ID, botToken: 'register-token' });
  try {
    const output = new DiscordOutput({ apiBase: discord.url, botToken: 'wrong-token' });
    await assert.rejects(registerCommands(output, APPLICATION_ID), /401/);
  } finally {
    await discord.close();
  }
});
