#!/bin/sh
# The preset a provider adds for gvpn, before golemsp sees the runtime
# (docs/provider.md, step 7). Run it as the provider's user.
#
# golemsp counts a runtime as configured when a preset named after it uses
# it. When one is missing (gvpn just installed), `golemsp run` asks for a price
# again and writes that price into the preset of every runtime, vm included.
# With this preset in place first, golemsp leaves the vm prices alone.
#
# Prices are in GLM: per hour of CPU time, per hour of activity, per start.
# The names CPU and Duration are the descriptor's counters (cpu, duration);
# "Init price" is the start fee. Change them by removing the preset
# (ya-provider preset remove gvpn) and running this again.
set -eu
CPU_PER_HOUR=${CPU_PER_HOUR:-0.1}
ENV_PER_HOUR=${ENV_PER_HOUR:-0.02}
START_FEE=${START_FEE:-0}
# golemsp's plugins; ya-provider checks that the exe-unit gvpn exists there.
EXE_UNIT_PATH=${EXE_UNIT_PATH:-"$HOME/.local/lib/yagna/plugins/*.json"}
export EXE_UNIT_PATH

per_second() { awk -v h="$1" 'BEGIN { printf "%.12f", h / 3600 }'; }

ya-provider preset create --no-interactive --preset-name gvpn --exe-unit gvpn --pricing linear \
	--price CPU="$(per_second "$CPU_PER_HOUR")" \
	--price Duration="$(per_second "$ENV_PER_HOUR")" \
	--price "Init price=$START_FEE"
ya-provider preset activate gvpn
ya-provider preset list
