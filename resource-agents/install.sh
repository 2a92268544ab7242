#!/bin/sh
# Install ocf:hasched:scheduler: $OCF_ROOT/resource.d/hasched/{scheduler,ocfagent.py,schedulerd.py,promotion.py}.
# usage: install.sh [--python PATH] [--ocf-root DIR]
# The agent's shebang becomes "#!PATH -IS": the agent needs only the standard library, so it skips
# site processing and the PYTHON* environment on every monitor. PATH decides which `hasched` the
# agent uses by default: the one installed beside that interpreter.
set -eu

python=$(command -v python3 || true)
ocf_root=${OCF_ROOT:-/usr/lib/ocf}
while [ $# -gt 0 ]; do
    case $1 in
        --python) python=$2; shift 2 ;;
        --ocf-root) ocf_root=$2; shift 2 ;;
        -h|--help) echo "usage: $0 [--python PATH] [--ocf-root DIR]"; exit 0 ;;
        *) echo "$0: unknown argument: $1" >&2; exit 2 ;;
    esac
done

src=$(cd "$(dirname "$0")" && pwd)
if [ -z "$python" ] || ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null
then
    echo "$0: --python ${python:-python3}: no such interpreter, or older than Python 3.11" >&2
    exit 2
fi
case $python in /*) ;; *) python=$(command -v "$python") ;; esac

dest=$ocf_root/resource.d/hasched
install -d -m 0755 "$dest"
tmp=$(mktemp "$dest/.scheduler.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
    echo "#!$python -IS"
    sed -e '1d' "$src/hasched/scheduler"
} >"$tmp"
chmod 0755 "$tmp"
for module in ocfagent.py schedulerd.py promotion.py; do
    install -m 0644 "$src/$module" "$dest/$module"
    # Compile once now: the agent never writes bytecode under $OCF_ROOT at run time.
    "$python" -m py_compile "$dest/$module"
done
mv -f "$tmp" "$dest/scheduler"
trap - EXIT
echo "installed $dest/scheduler (python: $python)"
