// eslint.config.mjs: lint rules for the web page's scripts (perl/share/www, run in the browser)
// and for this directory's test script (run by node). perl/t/56-www.t runs eslint with it.
import js from '@eslint/js';
import globals from 'globals';

export default [
  js.configs.recommended,
  {
    // app.js is a module (index.html: type="module"); callback.js a classic script
    files: ['**/*.js'],
    languageOptions: { sourceType: 'module', ecmaVersion: 2022, globals: globals.browser },
  },
  {
    files: ['**/callback.js'],
    languageOptions: { sourceType: 'script' },
    rules: { strict: ['error', 'global'] },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { sourceType: 'module', ecmaVersion: 2022, globals: globals.node },
  },
  {
    rules: {
      eqeqeq: 'error',
      'no-var': 'error',
      'prefer-const': 'error',
      'no-implicit-globals': 'error',
      'no-unused-vars': ['error', { args: 'after-used' }],
    },
  },
];
