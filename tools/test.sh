#!/usr/bin/env bash
# Set up and run the whole test suite (tiny random models plus the real SmolLM2, exported once per session).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh export,dev,docs
# Pages are checked in Debian's headless Chromium, driven by Playwright (skipped with a reason if absent).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# Static checks first, in seconds: lint and format (ruff, rules chosen in pyproject.toml) and types (mypy).
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy
# The JavaScript package (js/, Node 20): installed from the npm registry by its lock file, built (tsc) and tested
# (the conformance kit among them); pytest's browser test of its demo page uses this build.
(cd js && npm ci --no-audit --no-fund --loglevel=error && npm test)
.venv/bin/python -m pytest "$@"
# The docs site (mkdocs.yml, docs/): every page builds, and any warning (a broken link, an API page whose object is
# not found) fails. Built into site/ (gitignored).
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir site
