import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { BackendConfig } from '../config';
import { A1111Backend } from './a1111-backend';
import { ComfyUIBackend } from './comfyui';
import type { ImageBackend } from './image-backend';

/** The ComfyUI workflow used when a backend names no template of its own. */
export const DEFAULT_COMFYUI_TEMPLATE = join(__dirname, 'comfyui-txt2img.json');

const templates = new Map<string, object>();

/** Reads (once) and parses a ComfyUI template file; throws with the path when it is unreadable or not JSON. */
export function loadComfyUITemplate(path: string): object {
  let template = templates.get(path);
  if (template === undefined) {
    template = JSON.parse(readFileSync(path, 'utf8')) as object;
    templates.set(path, template);
  }

  return template;
}

/** Builds the client for one configured image server. */
export function createBackend(config: BackendConfig): ImageBackend {
  switch (config.type) {
    case 'a1111':
      return new A1111Backend(config.url);
    case 'comfyui':
      return new ComfyUIBackend(config.url, {
        template: loadComfyUITemplate(config.template ?? DEFAULT_COMFYUI_TEMPLATE),
      });
  }
}
