const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * The pixel size from a PNG's signature and IHDR chunk, without decoding the image. Throws an Error
 * saying what is wrong when the bytes are not a PNG.
 */
export function readPngSize(buf: Buffer): { width: number; height: number } {
  if (buf.length < 33 || !buf.subarray(0, 8).equals(PNG_SIGNATURE)) {
    throw new Error('not a PNG: the signature is missing');
  }

  if (buf.readUInt32BE(8) !== 13 || buf.toString('latin1', 12, 16) !== 'IHDR') {
    throw new Error('not a PNG: the first chunk is not a 13-byte IHDR');
  }

  const width = buf.readUInt32BE(16);
  const height = buf.readUInt32BE(20);
  if (width === 0 || height === 0) {
    throw new Error(`not a PNG: IHDR declares an empty size ${width}x${height}`);
  }

  return { width, height };
}

/** Like {@link readPngSize}, but undefined instead of an error. */
export function pngSize(buf: Buffer): { width: number; height: number } | undefined {
  try {
    return readPngSize(buf);
  } catch {
    return undefined;
  }
}
