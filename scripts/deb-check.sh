#!/usr/bin/env bash
# The Debian package, end to end, as CI runs it (.ci/run calls this after
# the test suite): build it with cargo-deb, install it with dpkg -i, check
# what it installed (binaries, unit and drop-in, config, man pages,
# completions, the muxchat system user), start the installed daemon as
# that user with the installed configuration, check /healthz with curl,
# stop it, remove the package and check that the files are gone.
#
# There is no running systemd in CI, so the daemon is started by hand with
# the unit's command line; the unit itself is checked with
# systemd-analyze verify. Needs root (dpkg), cargo-deb (installed here
# when missing), curl, adduser and systemd-analyze.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "deb-check: $1 is missing: apt-get install $2" >&2; exit 1; }
}
[ "$(id -u)" = 0 ] || { echo "deb-check: needs root (dpkg -i)" >&2; exit 1; }
need curl curl
need adduser adduser
need setpriv util-linux
need systemd-analyze systemd
need dpkg-deb dpkg
need readelf binutils
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked

# Man pages and completions, generated from the same definitions as --help.
cargo run --release --quiet --bin muxchat-docgen -- target/docgen >/dev/null
deb=$(cargo deb --quiet | tail -n 1)
[ -f "$deb" ] || { echo "deb-check: cargo deb printed no package path ($deb)" >&2; exit 1; }
echo "deb-check: built $deb"
info=$(dpkg-deb --info "$deb")
grep -q 'Depends:.*adduser' <<<"$info" || { echo "deb-check: the package does not depend on adduser" >&2; exit 1; }

pid=
out=$(mktemp)
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -f "$out"
    dpkg --purge muxchat >/dev/null 2>&1 || true
}
trap cleanup EXIT

dpkg -i "$deb"
for f in /usr/bin/muxchatd /usr/bin/muxchat /usr/bin/muxload \
    /etc/muxchat/muxchatd.toml \
    /usr/lib/systemd/system/muxchatd.service \
    /usr/lib/systemd/system/muxchatd.service.d/debian.conf \
    /usr/share/man/man1/muxchatd.1.gz /usr/share/man/man1/muxchat.1.gz /usr/share/man/man1/muxload.1.gz \
    /usr/share/bash-completion/completions/muxchatd \
    /usr/share/zsh/vendor-completions/_muxload \
    /usr/share/fish/vendor_completions.d/muxchat.fish \
    /usr/share/doc/muxchat/copyright /usr/share/doc/muxchat/OPERATIONS.md; do
    [ -e "$f" ] || { echo "deb-check: the package did not install $f" >&2; exit 1; }
done
getent passwd muxchat >/dev/null || { echo "deb-check: postinst created no muxchat user" >&2; exit 1; }
# The release binaries carry no DWARF (profile.release strips debuginfo).
sections=$(readelf -S /usr/bin/muxchatd)
if grep -q '\.debug_info' <<<"$sections"; then
    echo "deb-check: /usr/bin/muxchatd still carries .debug_info" >&2; exit 1
fi
/usr/bin/muxchatd --version
# The unit with the package's drop-in (ExecStart=/usr/bin/muxchatd, User=muxchat).
verify=$(systemd-analyze verify muxchatd.service 2>&1 || true)
if grep -q 'muxchatd.service' <<<"$verify"; then
    echo "deb-check: systemd-analyze verify: $verify" >&2; exit 1
fi

# Started as the unit would, as the muxchat user with the installed config
# (on a free loopback port: the command line wins over the file).
setpriv --reuid=muxchat --regid=muxchat --init-groups \
    /usr/bin/muxchatd --config /etc/muxchat/muxchatd.toml --bind 127.0.0.1:0 >"$out" 2>/dev/null &
pid=$!
addr=
for _ in $(seq 100); do
    addr=$(sed -n 's/^listening on //p' "$out")
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "deb-check: the installed muxchatd exited" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "deb-check: no 'listening on' line from the installed muxchatd" >&2; exit 1; }
[ "$(ps -o user= -p "$pid")" = muxchat ] || { echo "deb-check: not running as muxchat" >&2; exit 1; }
health=$(curl -fsS --max-time 5 "http://$addr/healthz")
[ "$health" = ok ] || { echo "deb-check: /healthz said '$health'" >&2; exit 1; }
echo "deb-check: /usr/bin/muxchatd on $addr as muxchat: /healthz $health"
kill -TERM "$pid"
wait "$pid" || { echo "deb-check: muxchatd exited $? after SIGTERM" >&2; exit 1; }
pid=

dpkg -r muxchat
[ ! -e /usr/bin/muxchatd ] || { echo "deb-check: /usr/bin/muxchatd survived dpkg -r" >&2; exit 1; }
dpkg --purge muxchat
[ ! -e /etc/muxchat/muxchatd.toml ] || { echo "deb-check: the config survived the purge" >&2; exit 1; }
echo "deb-check: ok"
