ticks() { set -- $(cut -d' ' -f14,15 /proc/$PPID/stat); echo $(($1 + $2)); }
t0=$(ticks)
eval "$PEER_CMD"
code=$?
echo "{\"type\": \"peer_cpu\", \"ticks\": $(($(ticks) - t0))}"
exit $code
