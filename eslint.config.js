import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'client/dist/', 'models/generated/', 'models/pulled/', 'data/', 'test-artifacts/', '.platforms/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-syntax': ['error', { selector: 'TSEnumDeclaration', message: 'Use an `as const` object instead of enum.' }],
    },
  },
  {
    files: ['server/**/*.ts', 'shared/**/*.ts', 'client/src/**/*.ts', 'models/**/*.ts'],
    ignores: ['server/main.ts'],
    rules: {
      'no-restricted-properties': ['error',
        { object: 'process', property: 'env', message: 'Only server/main.ts reads process.env.' },
        { object: 'process', property: 'argv', message: 'Only server/main.ts reads process.argv.' },
      ],
    },
  },
);
