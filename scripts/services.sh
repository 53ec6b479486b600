#!/usr/bin/env bash
# services.sh makes the Postgres and Redis that etlexec needs reachable and prints their URLs
# as shell export lines on stdout; everything else goes to stderr.
#
#   eval "$(scripts/services.sh up)"    # or: exports=$(scripts/services.sh up) && eval "$exports"
#
# Subcommands:
#   up (default)  For each service, in order:
#                   a. DATABASE_URL / REDIS_URL, if set and answering;
#                   b. the default local one (postgres@127.0.0.1:5432/test, 127.0.0.1:6379),
#                      unless ETL_SERVICES_NO_DEFAULT=1;
#                   c. a PRIVATE instance from the installed binaries, kept in the dev dir
#                      (ETL_DEV_DIR, default <repo>/.dev) on a free loopback port probed from
#                      55432 (Postgres, database "etlexec") and 56379 (Redis) upward; a second
#                      `up` reuses a running one;
#                   d. if the binaries are missing, apt-get install postgresql redis-server
#                      (sudo when not root), then c.
#   down          Stops the private instances recorded in the dev dir, nothing else.
#   env           Prints the exports only if both services already answer (a, b, or a running
#                 private instance); starts nothing; exits 1 otherwise.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEV_DIR=${ETL_DEV_DIR:-$REPO/.dev}
case $DEV_DIR in /*) ;; *) DEV_DIR=$PWD/$DEV_DIR ;; esac
DEV_DIR=${DEV_DIR%/}

DEFAULT_DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
DEFAULT_REDIS_URL='redis://127.0.0.1:6379/0'
PG_PORT_BASE=55432
REDIS_PORT_BASE=56379
PRIVATE_DB=etlexec

# Private Postgres: PG_HOME is owned by the postgres OS user when we run as root.
PG_HOME=$DEV_DIR/postgres
PG_DATA=$PG_HOME/data
PG_SOCK=$PG_HOME/run
PG_PORT_FILE=$DEV_DIR/postgres.port
# Private Redis.
REDIS_HOME=$DEV_DIR/redis
REDIS_PIDFILE=$REDIS_HOME/redis.pid
REDIS_PORT_FILE=$DEV_DIR/redis.port

INSTALLED=0

log() { printf 'services: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# redact hides a password in a URL before it is logged.
redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

# emit prints one export line, single-quoted so that eval in sh or bash takes it literally.
emit() { printf "export %s='%s'\n" "$1" "${2//\'/\'\\\'\'}"; }

no_default() { [[ -n ${ETL_SERVICES_NO_DEFAULT:-} && ${ETL_SERVICES_NO_DEFAULT} != 0 && ${ETL_SERVICES_NO_DEFAULT} != false ]]; }

with_timeout() { # seconds cmd...
	local s=$1
	shift
	if have timeout; then timeout "$s" "$@"; else "$@"; fi
}

# pid_alive reports whether pid runs; a zombie (exited, not yet reaped by a lazy init) does not.
pid_alive() {
	[[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null || return 1
	[[ ! -r /proc/$1/stat ]] || [[ $(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# port_in_use reports whether something accepts TCP connections on 127.0.0.1:port.
port_in_use() { with_timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }

# free_port prints the first loopback port from $1 upward that nothing listens on.
free_port() {
	local p
	for ((p = $1; p < $1 + 500; p++)); do
		port_in_use "$p" || {
			echo "$p"
			return 0
		}
	done
	die "no free loopback port in $1..$(($1 + 499))"
}

# lock serialises up/down on one dev dir (fd 9 stays open until the script exits). Daemons we
# start must not inherit fd 9, or they would hold the lock for as long as they run.
LOCKED=0
lock() {
	((LOCKED == 0)) || return 0
	LOCKED=1
	mkdir -p "$DEV_DIR"
	exec 9>"$DEV_DIR/.lock"
	if have flock; then flock -w 300 9 || die "timed out waiting for the lock on $DEV_DIR/.lock"; fi
}

# ---------------------------------------------------------------------------------------------
# Postgres

# pg_bindir prints the directory holding initdb and pg_ctl.
pg_bindir() {
	local d cands=()
	if have pg_config; then
		d=$(pg_config --bindir 2>/dev/null || true)
		[[ -n $d ]] && cands+=("$d")
	fi
	if compgen -G '/usr/lib/postgresql/*/bin' >/dev/null; then
		while IFS= read -r d; do cands+=("$d"); done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
	fi
	if have initdb; then cands+=("$(dirname "$(command -v initdb)")"); fi
	for d in "${cands[@]}"; do
		if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
			echo "$d"
			return 0
		fi
	done
	return 1
}

# pg_tool prints the path of a client tool (psql, pg_isready), from PATH or the server bindir.
pg_tool() {
	local d
	if have "$1"; then
		command -v "$1"
	elif d=$(pg_bindir) && [[ -x $d/$1 ]]; then
		echo "$d/$1"
	else
		return 1
	fi
}

# pg_answers reports whether the URL accepts a connection and runs a query.
pg_answers() {
	local tool
	if tool=$(pg_tool psql); then
		PGCONNECT_TIMEOUT=3 with_timeout 10 "$tool" -X -w -q -A -t -d "$1" -c 'select 1' >/dev/null 2>&1
	elif tool=$(pg_tool pg_isready); then
		PGCONNECT_TIMEOUT=3 with_timeout 10 "$tool" -q -d "$1" >/dev/null 2>&1
	else
		return 1
	fi
}

pg_private_url() { echo "postgres://postgres@127.0.0.1:$1/$PRIVATE_DB?sslmode=disable"; }

# as_pg runs a command as the OS user that owns the private cluster: postgres when we are root
# (initdb refuses root), ourselves otherwise.
as_pg() {
	if ((EUID != 0)); then
		"$@"
	elif have runuser; then
		(cd "$PG_HOME" && runuser -u postgres -- "$@")
	elif have setpriv; then
		(cd "$PG_HOME" && setpriv --reuid=postgres --regid=postgres --init-groups -- "$@")
	else
		die "running as root needs runuser or setpriv to run Postgres as the postgres user"
	fi
}

# pg_private_port prints the port of our running private Postgres (from postmaster.pid).
pg_private_port() {
	local pidfile=$PG_DATA/postmaster.pid pid port
	[[ -r $pidfile ]] || return 1
	pid=$(sed -n 1p "$pidfile")
	port=$(sed -n 4p "$pidfile")
	[[ $pid =~ ^[0-9]+$ && $port =~ ^[0-9]+$ ]] || return 1
	pid_alive "$pid" || return 1
	pg_answers "$(pg_private_url "$port")" || return 1
	echo "$port"
}

pg_locale() {
	if locale -a 2>/dev/null | grep -qixE 'c\.utf-?8'; then echo C.UTF-8; else echo C; fi
}

pg_start_private() {
	local bindir port pref attempt base=$PG_PORT_BASE sock=$PG_SOCK psql
	if ! bindir=$(pg_bindir); then
		install_packages
		bindir=$(pg_bindir) || die "no initdb/pg_ctl found even after installing postgresql"
	fi
	mkdir -p "$PG_HOME"
	if ((EUID == 0)); then
		id postgres >/dev/null 2>&1 || die "running as root but there is no postgres OS user to run Postgres as"
		chown postgres: "$PG_HOME"
		as_pg test -w "$PG_HOME" ||
			die "the postgres OS user cannot reach $PG_HOME (a parent directory is not searchable by others): chmod o+x the parents or set ETL_DEV_DIR elsewhere"
	fi
	if [[ ! -s $PG_DATA/PG_VERSION ]]; then
		rm -rf "$PG_DATA" # leftover from an interrupted initdb
		log "postgres: initdb $PG_DATA"
		if ! as_pg "$bindir/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale="$(pg_locale)" \
			--no-instructions >"$PG_HOME/initdb.log" 2>&1; then
			cat "$PG_HOME/initdb.log" >&2
			die "initdb failed"
		fi
		# Durability stays at the defaults (fault tests kill and restart this server).
		cat >>"$PG_DATA/postgresql.conf" <<-'EOF'

			# etlexec private instance (scripts/services.sh); port and socket dir come from pg_ctl -o.
			listen_addresses = '127.0.0.1'
			max_connections = 200
		EOF
	fi
	as_pg mkdir -p "$sock"
	# A unix socket path is limited to 107 bytes; fall back to TCP only when the dir is deep.
	if (($(printf '%s/.s.PGSQL.65535.lock' "$sock" | wc -c) > 107)); then
		log "postgres: $sock is too long for a unix socket; TCP only"
		sock=''
	fi
	pref=$(cat "$PG_PORT_FILE" 2>/dev/null || true)
	for attempt in 1 2 3 4 5; do
		if [[ $pref =~ ^[0-9]+$ ]] && ! port_in_use "$pref"; then port=$pref; else port=$(free_port "$base"); fi
		log "postgres: starting private instance on 127.0.0.1:$port"
		if as_pg "$bindir/pg_ctl" start -D "$PG_DATA" -l "$PG_HOME/postgres.log" -w -t 60 -s \
			-o "-p $port -k '$sock'" >&2 9>&-; then
			break
		fi
		# Most likely someone took the port between the probe and the bind: try the next one.
		tail -n 5 "$PG_HOME/postgres.log" >&2 || true
		as_pg "$bindir/pg_ctl" stop -D "$PG_DATA" -m immediate -s >/dev/null 2>&1 || true
		((attempt < 5)) || die "could not start the private Postgres; see $PG_HOME/postgres.log"
		pref=''
		base=$((port + 1))
	done
	echo "$port" >"$PG_PORT_FILE"
	psql=$(pg_tool psql) || die "psql not found"
	local admin="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
	if [[ -z $("$psql" -X -w -q -A -t -d "$admin" -c "select 1 from pg_database where datname = '$PRIVATE_DB'") ]]; then
		"$psql" -X -w -q -d "$admin" -c "create database $PRIVATE_DB" >&2
	fi
	PG_URL=$(pg_private_url "$port")
}

pg_stop_private() {
	local bindir
	if [[ ! -f $PG_DATA/postmaster.pid ]]; then
		log "postgres: no private instance running in $PG_DATA"
		return 0
	fi
	bindir=$(pg_bindir) || die "pg_ctl not found"
	if as_pg "$bindir/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; then
		as_pg "$bindir/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 -s >&2
		log "postgres: stopped private instance ($PG_DATA)"
	else
		log "postgres: private instance in $PG_DATA is not running"
	fi
}

# resolve_pg sets PG_URL; mode "env" never starts anything.
resolve_pg() {
	local port
	if [[ -n ${DATABASE_URL:-} ]]; then
		if pg_answers "$DATABASE_URL"; then
			log "postgres: using DATABASE_URL"
			PG_URL=$DATABASE_URL
			return 0
		fi
		log "postgres: DATABASE_URL=$(redact "$DATABASE_URL") does not answer"
	fi
	if ! no_default && pg_answers "$DEFAULT_DATABASE_URL"; then
		log "postgres: using the local default"
		PG_URL=$DEFAULT_DATABASE_URL
		return 0
	fi
	if [[ $1 == env ]]; then
		port=$(pg_private_port) || return 1
	else
		lock
		if ! port=$(pg_private_port); then
			pg_start_private
			return 0
		fi
	fi
	log "postgres: using the running private instance on port $port"
	PG_URL=$(pg_private_url "$port")
}

# ---------------------------------------------------------------------------------------------
# Redis

redis_answers() {
	local out hp host port
	if have redis-cli; then
		out=$(with_timeout 5 redis-cli --no-auth-warning -u "$1" ping 2>/dev/null) || return 1
		[[ $out == PONG ]]
	else
		# No redis-cli: speak RESP over bash's /dev/tcp (host:port only, no AUTH).
		hp=${1#*://}
		hp=${hp##*@}
		hp=${hp%%/*}
		host=${hp%:*}
		port=${hp##*:}
		[[ $hp == *:* ]] || port=6379
		with_timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "PING\r\n" >&3 && IFS= read -r l <&3 && [[ $l == +PONG* ]]' \
			"$host" "$port" 2>/dev/null
	fi
}

redis_private_url() { echo "redis://127.0.0.1:$1/0"; }

redis_home_real() { (cd "$REDIS_HOME" 2>/dev/null && pwd -P); }

# redis_is_ours reports whether the Redis on port runs from our dev dir.
redis_is_ours() {
	local dir want
	want=$(redis_home_real) || return 1
	redis_answers "$(redis_private_url "$1")" || return 1
	have redis-cli || return 1
	dir=$(with_timeout 5 redis-cli -h 127.0.0.1 -p "$1" config get dir 2>/dev/null | sed -n 2p)
	[[ $dir == "$want" ]]
}

# redis_pid_is_ours reports whether pid is a live redis-server whose working dir is ours.
redis_pid_is_ours() {
	local pid=$1 want
	pid_alive "$pid" || return 1
	want=$(redis_home_real) || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q redis-server || return 1
	[[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$want" ]]
}

redis_private_port() {
	local port
	port=$(cat "$REDIS_PORT_FILE" 2>/dev/null) || return 1
	[[ $port =~ ^[0-9]+$ ]] || return 1
	redis_is_ours "$port" || return 1
	echo "$port"
}

redis_start_private() {
	local port pref attempt base=$REDIS_PORT_BASE i pid
	if ! have redis-server; then
		install_packages
		have redis-server || die "no redis-server found even after installing redis-server"
	fi
	mkdir -p "$REDIS_HOME"
	pref=$(cat "$REDIS_PORT_FILE" 2>/dev/null || true)
	for attempt in 1 2 3 4 5; do
		if [[ $pref =~ ^[0-9]+$ ]] && ! port_in_use "$pref"; then port=$pref; else port=$(free_port "$base"); fi
		log "redis: starting private instance on 127.0.0.1:$port"
		rm -f "$REDIS_PIDFILE"
		redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
			--pidfile "$REDIS_PIDFILE" --dir "$REDIS_HOME" --logfile "$REDIS_HOME/redis.log" >&2 9>&- || true
		for ((i = 0; i < 200; i++)); do # up to ~10s
			if redis_is_ours "$port"; then
				echo "$port" >"$REDIS_PORT_FILE"
				REDIS_URL_OUT=$(redis_private_url "$port")
				return 0
			fi
			pid=$(cat "$REDIS_PIDFILE" 2>/dev/null || true)
			# Gave up already (e.g. lost the port to someone else)?
			if ((i > 10)) && ! redis_pid_is_ours "$pid"; then break; fi
			sleep 0.05
		done
		tail -n 5 "$REDIS_HOME/redis.log" >&2 || true
		pid=$(cat "$REDIS_PIDFILE" 2>/dev/null || true)
		if redis_pid_is_ours "$pid"; then kill "$pid" 2>/dev/null || true; fi
		pref=''
		base=$((port + 1))
	done
	die "could not start the private Redis; see $REDIS_HOME/redis.log"
}

redis_stop_private() {
	local pid i
	pid=$(cat "$REDIS_PIDFILE" 2>/dev/null || true)
	if ! redis_pid_is_ours "$pid"; then
		log "redis: no private instance running in $REDIS_HOME"
		rm -f "$REDIS_PIDFILE"
		return 0
	fi
	kill -TERM "$pid"
	for ((i = 0; i < 600; i++)); do # up to ~30s
		pid_alive "$pid" || break
		sleep 0.05
	done
	if pid_alive "$pid"; then
		log "redis: pid $pid ignored SIGTERM; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$REDIS_PIDFILE"
	log "redis: stopped private instance ($REDIS_HOME)"
}

# resolve_redis sets REDIS_URL_OUT; mode "env" never starts anything.
resolve_redis() {
	local port
	if [[ -n ${REDIS_URL:-} ]]; then
		if redis_answers "$REDIS_URL"; then
			log "redis: using REDIS_URL"
			REDIS_URL_OUT=$REDIS_URL
			return 0
		fi
		log "redis: REDIS_URL=$(redact "$REDIS_URL") does not answer"
	fi
	if ! no_default && redis_answers "$DEFAULT_REDIS_URL"; then
		log "redis: using the local default"
		REDIS_URL_OUT=$DEFAULT_REDIS_URL
		return 0
	fi
	if [[ $1 == env ]]; then
		port=$(redis_private_port) || return 1
	else
		lock
		if ! port=$(redis_private_port); then
			redis_start_private
			return 0
		fi
	fi
	log "redis: using the running private instance on port $port"
	REDIS_URL_OUT=$(redis_private_url "$port")
}

# ---------------------------------------------------------------------------------------------

install_packages() {
	local sudo=()
	((INSTALLED == 0)) || return 0
	INSTALLED=1
	have apt-get || die "Postgres/Redis binaries are missing and there is no apt-get: install postgresql and redis-server"
	if ((EUID != 0)); then
		have sudo || die "Postgres/Redis binaries are missing: run as root or install sudo so apt-get can install them"
		sudo=(sudo)
	fi
	log "installing postgresql and redis-server with apt-get"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >&2
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql redis-server >&2
	hash -r
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; }

main() {
	local cmd=${1:-up} ok=1
	case $cmd in
	up)
		resolve_pg up
		resolve_redis up
		;;
	env)
		resolve_pg env || {
			log "postgres: nothing answers (run: scripts/services.sh up)"
			ok=0
		}
		resolve_redis env || {
			log "redis: nothing answers (run: scripts/services.sh up)"
			ok=0
		}
		((ok)) || exit 1
		;;
	down)
		if [[ ! -d $DEV_DIR ]]; then
			log "nothing to stop: $DEV_DIR does not exist"
			return 0
		fi
		lock
		pg_stop_private
		redis_stop_private
		return 0
		;;
	-h | --help | help)
		usage
		return 0
		;;
	*)
		usage
		die "unknown subcommand: $cmd"
		;;
	esac
	emit DATABASE_URL "$PG_URL"
	emit REDIS_URL "$REDIS_URL_OUT"
}

main "$@"
