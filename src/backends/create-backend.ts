import type { BackendConfig } from '../config';
import { A1111Backend } from './a1111-backend';
import type { ImageBackend } from './image-backend';

/** Builds the client for one configured image server. */
export function createBackend(config: BackendConfig): ImageBackend {
  switch (config.type) {
    case 'a1111':
      return new A1111Backend(config.url);
  }
}
