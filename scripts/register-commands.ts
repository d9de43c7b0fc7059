// `npm run register [-- --guild <id>] [--dry-run]`: registers the bot's slash commands with Discord.
// Global commands can take a while to show up everywhere; guild commands appear at once.
import { parseArgs } from 'node:util';

import { DiscordOutput } from '../src/discord/discord-output';
import { GENERATE_COMMAND } from '../src/discord/generate-command';
import { QUEUE_COMMAND } from '../src/discord/queue-command';
import { loadDotEnv, readEnvironment, required } from '../src/environment';

/** Every command the bot answers, in the shape Discord's bulk-overwrite route takes. */
export const COMMANDS = [GENERATE_COMMAND, QUEUE_COMMAND];

export async function registerCommands(
  output: DiscordOutput,
  applicationId: string,
  guildId?: string,
): Promise<unknown> {
  return output.putCommands(applicationId, COMMANDS, guildId);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { guild: { type: 'string' }, 'dry-run': { type: 'boolean', default: false } },
  });
  if (values['dry-run']) {
    console.log(JSON.stringify(COMMANDS, null, 2));
    return;
  }

  loadDotEnv();
  const env = readEnvironment();
  const applicationId = required(env.applicationId, 'DISCORD_APPLICATION_ID');
  const botToken = required(env.botToken, 'DISCORD_TOKEN');
  const output = new DiscordOutput({ apiBase: env.discordApiBase, botToken });
  await registerCommands(output, applicationId, values.guild);
  const scope = values.guild === undefined ? 'globally' : `in guild ${values.guild}`;
  console.log(`registered ${COMMANDS.map((command) => `/${command.name}`).join(', ')} ${scope}`);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
