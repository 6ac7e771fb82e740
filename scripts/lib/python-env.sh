# Sourced by scripts that run Python against a real cortex (sdk-tests, soak):
# makes the virtualenv .venv-sdk/ from tests/sdk/requirements.txt (reused
# while the requirements are unchanged) and sets `py` to its interpreter.
# Expects: root (the repo), say(), die(); honours PYTHON.

req="tests/sdk/requirements.txt"
envdir=".venv-sdk"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || die "$python not found"

# A venv, or `pip install --target` where venv is unavailable.
py=""
export PYTHONPATH="${PYTHONPATH:-}"
if [[ -x "$envdir/bin/python" ]]; then
  py="$envdir/bin/python"
elif [[ -d "$envdir/site" ]]; then
  py="$python"
  PYTHONPATH="$root/$envdir/site${PYTHONPATH:+:$PYTHONPATH}"
elif "$python" -m venv "$envdir" >/dev/null 2>&1 && [[ -x "$envdir/bin/python" ]]; then
  py="$envdir/bin/python"
else
  say "python venv unavailable; falling back to pip install --target $envdir/site"
  rm -rf "$envdir"
  mkdir -p "$envdir/site"
  py="$python"
  PYTHONPATH="$root/$envdir/site${PYTHONPATH:+:$PYTHONPATH}"
fi

stamp="$envdir/.requirements.stamp"
want="$("$py" -c 'import hashlib,sys
print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest(), sys.version.split()[0])' "$req")"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]] || ! "$py" -c 'import openai, anthropic, ollama, pytest' >/dev/null 2>&1; then
  say "installing $req"
  if [[ "$py" == "$envdir/bin/python" ]]; then
    "$py" -m pip install -q --disable-pip-version-check -r "$req"
  else
    "$py" -m pip install -q --disable-pip-version-check --upgrade --target "$envdir/site" -r "$req"
  fi
  echo "$want" >"$stamp"
fi

