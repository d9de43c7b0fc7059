import type { DiscordStandIn } from './discord-api';
import {
  buttonInteraction,
  fakeSnowflake,
  postSignedInteraction,
  slashCommandInteraction,
  type InteractionSigner,
  type PostedInteraction,
} from './interaction-signer';

export interface SimulatedUser {
  id: string;
  username: string;
  /** Permission bitfield in the channel, as a decimal string (Manage Messages is 8192). */
  permissions?: string;
}

export interface SentInteraction extends PostedInteraction {
  id: string;
  token: string;
}

type InitialResponse = { type: number; data?: { content?: string; flags?: number } };

/**
 * Discord's side of a conversation with the bot, for tests, the demo and `npm run dev`: creates
 * interactions at the Discord stand-in, signs and POSTs them to the real endpoint, and records the
 * endpoint's first answer at the stand-in the way Discord would (creating the @original message).
 */
export class SimulatedDiscord {
  constructor(
    readonly discord: DiscordStandIn,
    readonly signer: InteractionSigner,
    readonly endpointUrl: string,
    readonly applicationId: string,
  ) {}

  /** `/generate prompt:…` with more options; `interaction` repeats an earlier one (same id and token). */
  async generate(
    prompt: string,
    input: {
      channelId: string;
      user: SimulatedUser;
      options?: Record<string, string | number>;
      attachments?: Record<string, unknown>;
      interaction?: { id: string; token: string };
    },
  ): Promise<SentInteraction> {
    const issued = input.interaction ?? this.discord.issueInteraction({ channelId: input.channelId });
    const interaction = slashCommandInteraction({
      ...issued,
      applicationId: this.applicationId,
      channelId: input.channelId,
      user: input.user,
      options: { prompt, ...input.options },
      ...(input.attachments === undefined ? {} : { attachments: input.attachments }),
    });
    return this.#send(issued, interaction);
  }

  /** Any other slash command without options, e.g. `/queue`. */
  async command(name: string, input: { channelId: string; user: SimulatedUser }): Promise<SentInteraction> {
    const issued = this.discord.issueInteraction({ channelId: input.channelId });
    const interaction = slashCommandInteraction({
      ...issued,
      applicationId: this.applicationId,
      channelId: input.channelId,
      user: input.user,
      command: name,
    });
    return this.#send(issued, interaction);
  }

  /** Clicks the button labelled `label` on the message owned by `messageToken`. */
  async click(
    messageToken: string,
    label: string,
    input: { channelId: string; user: SimulatedUser },
  ): Promise<SentInteraction> {
    const message = this.discord.originalMessage(messageToken);
    if (message === undefined) {
      throw new Error('the message to click on does not exist');
    }

    const rows = message.components as Array<{ components: Array<{ label?: string; custom_id?: string }> }>;
    const button = rows.flatMap((row) => row.components).find((component) => component.label === label);
    if (button?.custom_id === undefined) {
      throw new Error(`no "${label}" button on the message (it has ${JSON.stringify(rows)})`);
    }

    const issued = this.discord.issueInteraction({ channelId: input.channelId });
    const interaction = buttonInteraction({
      ...issued,
      applicationId: this.applicationId,
      channelId: input.channelId,
      user: input.user,
      customId: button.custom_id,
      permissions: input.user.permissions ?? '0',
      message: {
        id: message.id,
        channel_id: message.channelId,
        content: message.content,
        embeds: message.embeds,
        components: message.components,
      },
    });
    return this.#send(issued, interaction);
  }

  /** Types `typed` into the `option` of /generate; returns the suggested choices. */
  async autocomplete(
    option: string,
    typed: string,
    input: { channelId: string; user: SimulatedUser },
  ): Promise<{ choices: Array<{ name: string; value: string }>; elapsedMs: number }> {
    const interaction = slashCommandInteraction({
      id: fakeSnowflake(),
      token: 'autocomplete-interactions-have-no-followups',
      applicationId: this.applicationId,
      channelId: input.channelId,
      user: input.user,
      options: { prompt: '', [option]: typed },
      focused: option,
    });
    const posted = await postSignedInteraction(this.endpointUrl, this.signer, interaction);
    const body = posted.body as { type: number; data: { choices: Array<{ name: string; value: string }> } };
    if (body.type !== 8) {
      throw new Error(`expected an autocomplete answer, got ${JSON.stringify(body)}`);
    }

    return { choices: body.data.choices, elapsedMs: posted.elapsedMs };
  }

  async #send(issued: { id: string; token: string }, interaction: unknown): Promise<SentInteraction> {
    const posted = await postSignedInteraction(this.endpointUrl, this.signer, interaction);
    // Discord creates @original from the first answer only; a repeated POST changes nothing there.
    if (posted.status === 200 && this.discord.originalMessage(issued.token) === undefined) {
      this.discord.acknowledge(issued.token, posted.body as InitialResponse);
    }

    return { ...posted, ...issued };
  }
}

/** The text of an ephemeral (type 4) answer, or undefined for any other answer. */
export function ephemeralText(sent: PostedInteraction): string | undefined {
  const body = sent.body as { type?: number; data?: { content?: string; flags?: number } };
  return body.type === 4 && body.data?.flags === 64 ? body.data.content : undefined;
}
