#!/bin/sh
# Install ocf:hasched:scheduler: $OCF_ROOT/resource.d/hasched/{scheduler,ocfagent.py}.
# usage: install.sh [--python PATH] [--ocf-root DIR]
# The agent's shebang becomes "#!PATH -IS" (no site processing, no environment influence on
# every monitor); the interpreter's site-packages (for psutil) are written into the agent.
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
if [ -z "$python" ] || ! "$python" -c 'import psutil' 2>/dev/null; then
    echo "$0: --python ${python:-python3}: no such interpreter, or it lacks psutil" >&2
    exit 2
fi
case $python in /*) ;; *) python=$(command -v "$python") ;; esac
site=$("$python" -c 'import json, os, site
print(json.dumps([d for d in site.getsitepackages() if os.path.isdir(d)]))')

dest=$ocf_root/resource.d/hasched
install -d -m 0755 "$dest"
tmp=$(mktemp "$dest/.scheduler.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
    echo "#!$python -IS"
    sed -e '1d' -e "s|^SITE_PACKAGES: list\[str\] = \[\]\$|SITE_PACKAGES: list[str] = $site|" \
        "$src/hasched/scheduler"
} >"$tmp"
grep -q "^SITE_PACKAGES: list\[str\] = \[\"" "$tmp" || {
    echo "$0: could not record site-packages in the agent" >&2; exit 1; }
chmod 0755 "$tmp"
install -m 0644 "$src/ocfagent.py" "$dest/ocfagent.py"
# Compile once now: the agent never writes bytecode under $OCF_ROOT at run time.
"$python" -m py_compile "$dest/ocfagent.py"
mv -f "$tmp" "$dest/scheduler"
trap - EXIT
echo "installed $dest/scheduler (python: $python)"
