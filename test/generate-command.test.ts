import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ApplicationCommandOptionType } from 'discord-api-types/v10';

import { OPTION_BOUNDS, parseConfig, resolveChannel } from '../src/config';
import { GENERATE_COMMAND, parseGenerateOptions, splitPrompt } from '../src/discord/generate-command';

const config = parseConfig({
  defaults: { width: 512, height: 512, steps: 20, cfgScale: 7, sampler: 'Euler a', negativePrompt: 'lowres' },
  limits: { maxWidth: 1024, maxHeight: 1024, maxSteps: 50 },
  backends: { gpu: { type: 'a1111', url: 'http://127.0.0.1:7860' } },
  channels: { '1': { backend: 'gpu', limits: { maxSteps: 30 }, defaults: { steps: 10 } } },
});
const channel = resolveChannel(config, '1')!;

function options(values: Record<string, string | number>) {
  return Object.entries(values).map(([name, value]) => ({
    name,
    value,
    type: typeof value === 'string' ? ApplicationCommandOptionType.String : ApplicationCommandOptionType.Integer,
  })) as never;
}

test('bracketed words become the negative prompt when no negative is given', () => {
  assert.deepEqual(splitPrompt('a castle [blurry] on a hill [people, text]', undefined, ''), {
    prompt: 'a castle on a hill',
    negativePrompt: 'blurry, people, text',
  });
});

test('an explicit negative wins and the brackets stay in the prompt', () => {
  assert.deepEqual(splitPrompt('a castle [blurry]', 'fog', ''), { prompt: 'a castle [blurry]', negativePrompt: 'fog' });
});

test('without brackets or a negative, the channel default negative prompt applies', () => {
  assert.deepEqual(splitPrompt('a castle', undefined, 'lowres'), { prompt: 'a castle', negativePrompt: 'lowres' });
});

test('channel defaults fill in what the user left out, and seed -1 means random', () => {
  const parsed = parseGenerateOptions(options({ prompt: 'a cat' }), channel.defaults, channel.limits);
  assert.deepEqual(parsed, {
    ok: true,
    settings: {
      prompt: 'a cat',
      negativePrompt: 'lowres',
      width: 512,
      height: 512,
      steps: 10,
      cfgScale: 7,
      sampler: 'Euler a',
      seed: -1,
    },
  });
});

test('channel limits are narrower than the registered bounds and every problem is named', () => {
  const parsed = parseGenerateOptions(
    options({ prompt: 'a cat', steps: 40, width: 2048, height: 100 }),
    channel.defaults,
    channel.limits,
  );
  assert.equal(parsed.ok, false);
  const text = parsed.ok ? '' : parsed.problems.join('\n');
  assert.match(text, /`steps` must be between 1 and 30/);
  assert.match(text, /`width` must be between 64 and 1024/);
  assert.match(text, /`height` must be a multiple of 8/);
});

test('a prompt that is only brackets is refused as empty', () => {
  const parsed = parseGenerateOptions(options({ prompt: '[ugly]' }), channel.defaults, channel.limits);
  assert.equal(parsed.ok, false);
});

test('the registered command carries the same bounds the endpoint enforces', () => {
  const byName = new Map<string, Record<string, unknown>>(
    GENERATE_COMMAND.options.map((option) => [option.name, option]),
  );
  assert.equal(byName.get('prompt')?.['max_length'], OPTION_BOUNDS.promptLength);
  const steps = byName.get('steps') as { min_value: number; max_value: number };
  assert.equal(steps.max_value, OPTION_BOUNDS.stepsMax);
  const tooMany = parseGenerateOptions(
    options({ prompt: 'x', steps: OPTION_BOUNDS.stepsMax + 1 }),
    { ...channel.defaults },
    { maxWidth: 2048, maxHeight: 2048, maxSteps: 150 },
  );
  assert.equal(tooMany.ok, false);
});
