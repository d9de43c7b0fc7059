import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', '.tools/', '.data/', 'demo-output/'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/no-empty-function': 'off',
    },
  },
  {
    // Workflow code is replayed deterministically in a sandbox: no Node built-ins, no I/O.
    files: ['src/workflows/**/*.ts', 'src/workflows.ts', 'src/shared.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['node:*'], message: 'Workflow code must not use Node built-ins; do I/O in an activity.' },
            {
              group: ['fs', 'path', 'os', 'crypto', 'http', 'https', 'net', 'child_process'],
              message: 'Workflow code must not use Node built-ins.',
            },
            {
              group: ['../activities', '../activities/*'],
              importNames: ['createActivities'],
              message: 'Import activity types only.',
            },
          ],
        },
      ],
    },
  },
);
