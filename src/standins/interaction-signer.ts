import { randomBytes } from 'node:crypto';

import { ApplicationCommandOptionType, ApplicationCommandType, InteractionType } from 'discord-api-types/v10';
import nacl from 'tweetnacl';

/**
 * Plays Discord's side of the Interactions Endpoint for tests, the demo and `npm run dev`: holds an
 * Ed25519 key pair and signs interaction bodies the way Discord does. tweetnacl is slow at verifying
 * but fine for signing a handful of requests.
 */
export class InteractionSigner {
  readonly publicKeyHex: string;
  readonly #secretKey: Uint8Array;

  private constructor(keyPair: nacl.SignKeyPair) {
    this.publicKeyHex = Buffer.from(keyPair.publicKey).toString('hex');
    this.#secretKey = keyPair.secretKey;
  }

  static generate(): InteractionSigner {
    return new InteractionSigner(nacl.sign.keyPair());
  }

  /** The two headers Discord adds to every interaction POST. */
  sign(body: string, timestampSeconds = Math.floor(Date.now() / 1_000)): Record<string, string> {
    const timestamp = String(timestampSeconds);
    const signature = nacl.sign.detached(Buffer.from(timestamp + body, 'utf8'), this.#secretKey);
    return {
      'x-signature-ed25519': Buffer.from(signature).toString('hex'),
      'x-signature-timestamp': timestamp,
    };
  }
}

/** What every simulated interaction needs: who sent it, where, and its id and token. */
export interface InteractionBase {
  id: string;
  token: string;
  applicationId: string;
  channelId: string;
  guildId?: string;
  user: { id: string; username: string };
}

export interface SlashCommandOptions extends InteractionBase {
  command?: string;
  options?: Record<string, string | number>;
  /** Resolved attachments (`data.resolved.attachments`), referenced by id from an attachment option. */
  attachments?: Record<string, unknown>;
  /** Marks this option as the one being typed in: makes an autocomplete interaction. */
  focused?: string;
}

/** A chat-input command interaction shaped like the ones Discord sends from a guild channel. */
export function slashCommandInteraction(input: SlashCommandOptions): Record<string, unknown> {
  const options = Object.entries(input.options ?? {}).map(([name, value]) => ({
    name,
    value,
    type:
      name === 'image'
        ? ApplicationCommandOptionType.Attachment
        : typeof value === 'string'
          ? ApplicationCommandOptionType.String
          : Number.isInteger(value) && name !== 'cfg_scale' && name !== 'strength'
            ? ApplicationCommandOptionType.Integer
            : ApplicationCommandOptionType.Number,
    ...(input.focused === name ? { focused: true } : {}),
  }));
  const guildId = input.guildId ?? '200000000000000001';
  return {
    id: input.id,
    application_id: input.applicationId,
    type:
      input.focused === undefined ? InteractionType.ApplicationCommand : InteractionType.ApplicationCommandAutocomplete,
    token: input.token,
    version: 1,
    channel_id: input.channelId,
    channel: { id: input.channelId, type: 0 },
    guild_id: guildId,
    app_permissions: '0',
    locale: 'en-US',
    guild_locale: 'en-US',
    entitlements: [],
    authorizing_integration_owners: { '0': guildId },
    context: 0,
    member: {
      user: { id: input.user.id, username: input.user.username, global_name: input.user.username, discriminator: '0' },
      roles: [],
      permissions: '0',
      joined_at: new Date(0).toISOString(),
      deaf: false,
      mute: false,
      flags: 0,
    },
    data: {
      id: '300000000000000001',
      name: input.command ?? 'generate',
      type: ApplicationCommandType.ChatInput,
      options,
      ...(input.attachments === undefined ? {} : { resolved: { attachments: input.attachments } }),
    },
  };
}

export interface ButtonClickOptions extends InteractionBase {
  customId: string;
  /** The message the button sits on, as Discord includes it in the interaction. */
  message: Record<string, unknown>;
  /** The member's permission bitfield in the channel, as a decimal string. */
  permissions?: string;
}

/** A button click (message component interaction) shaped like the ones Discord sends. */
export function buttonInteraction(input: ButtonClickOptions): Record<string, unknown> {
  const base = slashCommandInteraction({ ...input, command: 'unused' });
  const member = base['member'] as Record<string, unknown>;
  return {
    ...base,
    type: InteractionType.MessageComponent,
    member: { ...member, permissions: input.permissions ?? '0' },
    message: input.message,
    data: { custom_id: input.customId, component_type: 2 },
  };
}

export interface PostedInteraction {
  status: number;
  body: unknown;
  /** Time from sending the POST to the full answer, in ms. */
  elapsedMs: number;
}

/** Signs and POSTs an interaction body to an endpoint URL over real HTTP. */
export async function postSignedInteraction(
  url: string,
  signer: InteractionSigner,
  interaction: unknown,
  headers: Record<string, string> = {},
): Promise<PostedInteraction> {
  const body = JSON.stringify(interaction);
  const started = performance.now();
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...signer.sign(body), ...headers },
    body,
  });
  const text = await response.text();
  const elapsedMs = performance.now() - started;
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON: keep the text.
  }

  return { status: response.status, body: parsed, elapsedMs };
}

/** A Discord-like snowflake id string, unique enough for tests and the demo. */
export function fakeSnowflake(): string {
  const millis = BigInt(Date.now() - 1_420_070_400_000);
  return ((millis << 22n) | BigInt(randomBytes(2).readUInt16BE() & 0x3f_ff)).toString();
}
