# Shared by the conformance scripts (sourced, not run): Prism in proxy mode between
# the action and an emulator. Callers set `work` (a temp dir) and `pids` (an array
# their EXIT trap kills).

source "$(dirname "${BASH_SOURCE[0]}")/versions"
export CI_TOOLS="${CI_TOOLS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/ci-tools}"

# prism_install LABEL: installs CI's npm tools (Prism among them; once, see .ci/tools);
# sets PRISM to its command and NPM_TOOLS to their node_modules.
prism_install() {
  echo "== conformance ($1): Prism $PRISM_VERSION (bash .ci/tools npm)"
  bash "$(dirname "${BASH_SOURCE[0]}")/tools" npm
  NPM_TOOLS="$CI_TOOLS/npm/node_modules"
  PRISM="$NPM_TOOLS/.bin/prism"
}

# prism_proxy LABEL SPEC UPSTREAM [prism flags...]: starts Prism on a free loopback port
# in front of UPSTREAM, logging to $work/prism.log; sets PRISM_PORT once it answers.
prism_proxy() {
  local label=$1 spec=$2 upstream=$3; shift 3
  PRISM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  echo "== conformance ($label): Prism proxy on 127.0.0.1:$PRISM_PORT -> $upstream"
  "$PRISM" proxy "$spec" "$upstream" --host 127.0.0.1 --port "$PRISM_PORT" "$@" >"$work/prism.log" 2>&1 &
  pids+=($!)
  # Prism is up once it answers anything on its port.
  for _ in $(seq 1 300); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$PRISM_PORT" 2>/dev/null && return 0
    sleep 0.2
  done
  cat "$work/prism.log"; echo "conformance ($label): Prism did not start"; return 1
}

# sandbox_start LABEL VAR... -- COMMAND...: runs a sandbox, waits until it printed
# every VAR=value line, and exports each VAR.
sandbox_start() {
  local label=$1; shift
  local vars=()
  while [ "$1" != "--" ]; do vars+=("$1"); shift; done
  shift
  "$@" >"$work/sandbox-$label.out" 2>&1 &
  pids+=($!)
  local v value
  for v in "${vars[@]}"; do
    for _ in $(seq 1 300); do grep -q "^$v=" "$work/sandbox-$label.out" && break; sleep 0.1; done
    # The first such line: the commands printed to paste may start with NAME= too.
    value=$(sed -n "s/^$v=//p" "$work/sandbox-$label.out" | head -n 1)
    [ -n "$value" ] || { cat "$work/sandbox-$label.out"; echo "conformance ($label): the sandbox did not start"; return 1; }
    export "$v=$value"
  done
}
