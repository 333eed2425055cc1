#!/bin/bash
# The VM suite's driver: runs inside the VM as a systemd service, after multi-user.target,
# against the installed ironclawd under the real systemd and cgroup v2. Every check prints one
# line on the serial console, "IRONCLAW-VM PASS <name>" or "IRONCLAW-VM FAIL <name>: <why>",
# and "IRONCLAW-VM DONE <passed> <failed>" at the end; then the VM powers off.
set -u
exec > >(tee -a /var/log/ironclaw-vm.log > /dev/ttyS0) 2>&1

SOCK=/run/ironclaw/ironclaw.sock
UNIT_CG=/sys/fs/cgroup/system.slice/ironclawd.service
passed=0
failed=0

pass() { echo "IRONCLAW-VM PASS $1"; passed=$((passed + 1)); }
fail() { echo "IRONCLAW-VM FAIL $1: $2"; failed=$((failed + 1)); }
check() { # check NAME DETAIL COMMAND...: passes when COMMAND succeeds
    local name=$1 detail=$2
    shift 2
    if "$@"; then pass "$name"; else fail "$name" "$detail"; fi
}
is() { [ "$1" = "$2" ]; }
has() { printf '%s' "$1" | grep -q -- "$2"; }
api() { curl -s --max-time 30 --unix-socket "$SOCK" "$@"; }
exec_plugin() { # exec_plugin PLUGIN JSON-PARAMETERS
    api -H 'content-type: application/json' -d "{\"parameters\": $2}" "http://localhost/api/v1/plugins/$1/execute"
}
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }
wait_active() { # wait_active UNIT SECONDS
    for _ in $(seq 1 $(($2 * 10))); do
        [ "$(systemctl is-active "$1")" = active ] && return 0
        sleep 0.1
    done
    return 1
}
wait_api() {
    for _ in $(seq 1 300); do
        api http://localhost/healthz > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
exec_cgroups() { find "$UNIT_CG" -maxdepth 1 -name 'exec-*' 2>/dev/null | wc -l; }
runners() { pgrep -f 'ironclawd __runner' | wc -l; }

status_of() { printf '%s' "$1" | field "['status']" 2>/dev/null; }
echo "IRONCLAW-VM START $(uname -r)"

# Mock upstreams on 127.0.0.2:8080, reached through the daemon's proxy by their real names; the
# secrets in a root-only file; base URLs and the private-address grant in a policy of the VM's.
python3 /usr/local/libexec/ironclaw-vm-mocks 127.0.0.2 8080 &
sed -i '1i secrets_file = "/etc/ironclaw/secrets.toml"' /etc/ironclaw/ironclawd.toml
cat >> /etc/ironclaw/ironclawd.toml << 'CONF'
[proxy.hosts]
"api.openweathermap.org" = "127.0.0.2:8080"
"newsapi.org" = "127.0.0.2:8080"
"api.duckduckgo.com" = "127.0.0.2:8080"
"html.duckduckgo.com" = "127.0.0.2:8080"
CONF
printf 'OPENWEATHER_API_KEY = "vm-owm-key"\nNEWSAPI_KEY = "vm-news-key"\n' > /etc/ironclaw/secrets.toml
chmod 600 /etc/ironclaw/secrets.toml
cat > /etc/ironclaw/policies/zz-vm-mocks.toml << 'CONF'
[plugins.weather]
private_addresses = ["127.0.0.2"]
config = { base_url = "http://api.openweathermap.org/data/2.5" }
[plugins.news]
private_addresses = ["127.0.0.2"]
config = { base_url = "http://newsapi.org/v2" }
[plugins.web_search]
private_addresses = ["127.0.0.2"]
config = { api_url = "http://api.duckduckgo.com/", html_url = "http://html.duckduckgo.com/html/" }
CONF

# --- the installed units, where the binaries they name exist -----------------------------------
verify=$(systemd-analyze verify /usr/local/lib/systemd/system/ironclawd.service /usr/local/lib/systemd/system/ironclawd.socket 2>&1)
check units_verify "$verify" [ -z "$verify" ]

# --- start under systemd: Type=notify, STATUS ---------------------------------------------
systemctl start ironclawd
check start "ironclawd did not become active: $(systemctl status ironclawd --no-pager 2>&1 | tail -5)" \
    eval 'wait_active ironclawd 60 && wait_api'
status=$(systemctl show -p StatusText --value ironclawd)
check notify_status "StatusText is '$status'" has "$status" 'plugins enabled'

system=$(api http://localhost/api/v1/system)
resources=$(printf '%s' "$system" | field "['layers']['resources']")
check cgroup_v2 "resources: $resources" is "$resources" cgroup_v2
main=$(systemctl show -p MainPID --value ironclawd)
check supervisor_leaf "$(cat /proc/$main/cgroup)" grep -q 'ironclawd.service/supervisor' "/proc/$main/cgroup"

# --- limits on the real hierarchy ------------------------------------------------------------
r=$(exec_plugin misbehave_native '{"attack": "memory_bomb"}')
check memory_limit "$r" is "$(status_of "$r")" memory_limit
check memory_events_oom_kill "$r" has "$r" 'OOM-killed'
check layers_report_cgroup_v2 "$r" has "$r" '"resources":"cgroup_v2"'

r=$(exec_plugin misbehave_native '{"attack": "fork_bomb"}')
forked=$(printf '%s' "$r" | field "['data']['forked']" 2>/dev/null || echo 999999)
check pids_max "forked=$forked: $r" [ "$forked" -le 8 ]

r=$(exec_plugin misbehave_throttled '{"attack": "cpu_spin"}')
cpu=$(printf '%s' "$r" | field "['cpu_time_ms']" 2>/dev/null || echo 0)
wall=$(printf '%s' "$r" | field "['duration_ms']" 2>/dev/null || echo 1)
check cpu_max "cpu ${cpu} ms over ${wall} ms at a 0.2 share: $r" \
    python3 -c "import sys; sys.exit(0 if 0.1 * $wall <= $cpu <= 0.35 * $wall else 1)"

# The same attacks as tests/resources.rs, on the cgroup v2 backend: CPU time spent in children
# the kernel reaps (SIGCHLD ignored) counts against the limit; resuming signals do not defeat
# cpu.max; a memfd bomb ends at memory.max.
r=$(exec_plugin misbehave_native '{"attack": "unreaped_children", "how": "fork", "reap": "sig_ign", "count": 1000, "child_ms": 40}')
cpu=$(printf '%s' "$r" | field "['cpu_time_ms']" 2>/dev/null || echo 0)
echo "IRONCLAW-VM INFO cpu_time_unreaped_children: $(status_of "$r"), ${cpu} ms of CPU"
check cpu_time_unreaped_children "cpu ${cpu} ms: $r" eval '[ "$(status_of "$r")" = cpu_limit ] && [ "$cpu" -ge 1000 ]'
r=$(exec_plugin misbehave_throttled '{"attack": "throttle_escape", "how": "kill", "spinners": 2}')
cpu=$(printf '%s' "$r" | field "['cpu_time_ms']" 2>/dev/null || echo 0)
wall=$(printf '%s' "$r" | field "['duration_ms']" 2>/dev/null || echo 1)
echo "IRONCLAW-VM INFO cpu_max_resume_signals: ${cpu} ms of CPU over ${wall} ms"
check cpu_max_resume_signals "cpu ${cpu} ms over ${wall} ms at a 0.2 share: $r" \
    python3 -c "import sys; sys.exit(0 if 0.1 * $wall <= $cpu <= 0.35 * $wall else 1)"
r=$(exec_plugin misbehave_hoarder '{"attack": "hidden_memory", "how": "memfd", "count": 64, "mib": 16}')
check memory_max_memfd "$r" is "$(status_of "$r")" memory_limit

check cgroups_removed "$(find "$UNIT_CG" -maxdepth 1 -name 'exec-*')" [ "$(exec_cgroups)" -eq 0 ]

# --- Landlock ABI 2 on this kernel, reported as such; a policy demanding more refuses ---------
r=$(exec_plugin misbehave_native '{"attack": "identity"}')
landlock=$(printf '%s' "$r" | field "['layers']['sandbox']['landlock']" 2>/dev/null)
check landlock_best_effort "landlock: $landlock" has "$landlock" "'abi': 2"
check landlock_reported_partial "landlock: $landlock" has "$landlock" "partially_enforced"
printf '[sandbox]\nlandlock_min_abi = 3\n' > /etc/ironclaw/policies/zz-vm-abi.toml
systemctl reload ironclawd
sleep 2
r=$(exec_plugin misbehave_native '{"attack": "identity"}')
check landlock_min_abi_refuses "$r" is "$(status_of "$r")" denied
rm -f /etc/ironclaw/policies/zz-vm-abi.toml
sleep 1

# --- systemctl reload: RELOADING, then ready --------------------------------------------------
# The daemon's RELOADING=1 ... READY=1 is what the unit's state shows (and what a blocking
# `systemctl reload` waits for).
# The daemon's test hook holds the reload while /var/lib/ironclaw/hold-reload exists.
touch /var/lib/ironclaw/hold-reload
systemctl reload --no-block ironclawd
states=""
for _ in $(seq 1 100); do
    state=$(systemctl show -p ActiveState --value ironclawd)
    case "$states" in *"$state"*) ;; *) states="$states $state" ;; esac
    [ "$state" = reloading ] && break
    sleep 0.1
done
rm -f /var/lib/ironclaw/hold-reload
for _ in $(seq 1 300); do
    state=$(systemctl show -p ActiveState --value ironclawd)
    case "$states" in *"$state"*) ;; *) states="$states $state" ;; esac
    [ "$state" = active ] && break
    sleep 0.1
done
check reload_reports_reloading "states seen:$states" has "$states" reloading
check reload_ready_again "states seen:$states" is "$(systemctl is-active ironclawd)" active

# --- the shipped plugins ----------------------------------------------------------------------
r=$(exec_plugin calculator '{"expression": "sqrt(16) + 1"}')
check plugin_calculator "$r" is "$(printf '%s' "$r" | field "['data']['result']")" 5
r=$(exec_plugin file_ops '{"operation": "write", "path": "vm.txt", "content": "hello"}')
check plugin_file_ops "$r" is "$(status_of "$r")" success
r=$(exec_plugin weather '{"location": "Paris"}')
check plugin_weather "$r" is "$(printf '%s' "$r" | field "['data']['temperature']" 2>/dev/null)" 21.5
r=$(exec_plugin news '{"country": "fr"}')
check plugin_news "$r" is "$(printf '%s' "$r" | field "['data']['articles'][0]['title']" 2>/dev/null)" "Sandboxes everywhere"
r=$(exec_plugin web_search '{"query": "sandbox"}')
check plugin_web_search "$r" is "$(printf '%s' "$r" | field "['data']['results'][0]['title']" 2>/dev/null)" Sandbox

# --- kill -9: systemd restarts it, nothing is left behind --------------------------------------
old=$(systemctl show -p MainPID --value ironclawd)
kill -9 "$old"
sleep 3
wait_active ironclawd 60 && wait_api
new=$(systemctl show -p MainPID --value ironclawd)
orphans=0
for pid in $(pgrep -f 'ironclawd __runner'); do
    parent=$(ps -o ppid= -p "$pid" | tr -d ' ')
    # Runners are the daemon's children, or the outer runner's (the sandbox's init).
    [ "$parent" = "$new" ] || [ "$(ps -o ppid= -p "$parent" | tr -d ' ')" = "$new" ] || orphans=$((orphans + 1))
done
check kill9_restart "old=$old new=$new" [ "$new" != "$old" ]
check kill9_no_orphans "orphans=$orphans cgroups=$(exec_cgroups)" [ "$orphans" -eq 0 -a "$(exec_cgroups)" -eq 0 ]

# --- the watchdog restarts a daemon that stops pinging -----------------------------------------
mkdir -p /run/systemd/system/ironclawd.service.d
printf '[Service]\nWatchdogSec=4s\n' > /run/systemd/system/ironclawd.service.d/watchdog.conf
systemctl daemon-reload
systemctl restart ironclawd
wait_active ironclawd 60 && wait_api
before=$(systemctl show -p NRestarts --value ironclawd)
touch /var/lib/ironclaw/freeze-watchdog
sleep 12
rm -f /var/lib/ironclaw/freeze-watchdog
wait_active ironclawd 60
after=$(systemctl show -p NRestarts --value ironclawd)
check watchdog_restart "NRestarts $before -> $after" [ "$after" -gt "$before" ]
rm -f /run/systemd/system/ironclawd.service.d/watchdog.conf
systemctl daemon-reload

# --- systemctl stop: no runner, no execution cgroup --------------------------------------------
systemctl stop ironclawd
sleep 1
check stop_clean "runners=$(runners) cgroups=$(exec_cgroups)" [ "$(runners)" -eq 0 -a "$(exec_cgroups)" -eq 0 ]

# --- socket activation, and a start without the socket unit -------------------------------------
systemctl start ironclawd.socket
r=$(exec_plugin calculator '{"expression": "2+2"}')
check socket_activation "$r" is "$(printf '%s' "$r" | field "['data']['result']")" 4
systemctl stop ironclawd.socket ironclawd
systemctl start ironclawd
wait_active ironclawd 60 && wait_api
r=$(exec_plugin calculator '{"expression": "3+3"}')
check without_socket_unit "$r" is "$(printf '%s' "$r" | field "['data']['result']")" 6
systemctl stop ironclawd

if [ "$failed" -gt 0 ]; then
    echo "IRONCLAW-VM journal of ironclawd (last 60 lines):"
    journalctl -u ironclawd --no-pager | tail -60 | sed 's/^/IRONCLAW-VM-LOG /'
fi
echo "IRONCLAW-VM DONE $passed $failed"
systemctl poweroff --no-block
