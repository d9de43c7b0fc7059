import { PNG } from 'pngjs';

const RGB_CHANNELS = [0, 1, 2] as const;

type Rgb = readonly [number, number, number];

/**
 * Draws a stand-in picture: a smooth four-corner colour gradient with a soft glowing disc, all derived from
 * `seed` and `prompt`, so the same pair always yields the same bytes and different seeds look different.
 * The result is an 8-bit RGB PNG of exactly `width` x `height` pixels; smooth gradients compress well, so a
 * 1024x1024 image stays far below 1 MB.
 *
 * Throws a `RangeError` when `width` or `height` is not a positive integer.
 */
export function encodePng(width: number, height: number, seed: number, prompt = ''): Buffer {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`a PNG needs a positive integer size, got ${width}x${height}`);
  }

  const random = seededRandom(hashText(`${seed}\u0000${prompt}`));
  const topLeft = randomColour(random);
  const topRight = randomColour(random);
  const bottomLeft = randomColour(random);
  const bottomRight = randomColour(random);
  const glow = randomColour(random);
  const glowX = (0.2 + 0.6 * random()) * width;
  const glowY = (0.2 + 0.6 * random()) * height;
  const glowRadius = (0.15 + 0.25 * random()) * Math.min(width, height);

  const png = new PNG({ width, height });
  for (let y = 0; y < height; y++) {
    const v = height === 1 ? 0 : y / (height - 1);
    for (let x = 0; x < width; x++) {
      const u = width === 1 ? 0 : x / (width - 1);
      const distance = Math.hypot(x - glowX, y - glowY) / glowRadius;
      const glowWeight = distance >= 1 ? 0 : 0.5 * (1 + Math.cos(Math.PI * distance));
      const offset = (y * width + x) * 4;
      for (const channel of RGB_CHANNELS) {
        const top = topLeft[channel] + (topRight[channel] - topLeft[channel]) * u;
        const bottom = bottomLeft[channel] + (bottomRight[channel] - bottomLeft[channel]) * u;
        const background = top + (bottom - top) * v;
        png.data[offset + channel] = Math.round(background + (glow[channel] - background) * glowWeight);
      }
      png.data[offset + 3] = 255;
    }
  }

  return PNG.sync.write(png, { colorType: 2 });
}

/** FNV-1a over the UTF-8 bytes: a stable 32-bit seed for the colour generator. */
function hashText(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash = Math.imul(hash ^ byte, 0x01000193);
  }

  return hash >>> 0;
}

/** mulberry32: small, fast and deterministic; good enough for picking colours. */
function seededRandom(state: number): () => number {
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function randomColour(random: () => number): Rgb {
  return [Math.floor(random() * 256), Math.floor(random() * 256), Math.floor(random() * 256)];
}

export { readPngSize } from '../backends/png-size';
