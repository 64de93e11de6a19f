#!/usr/bin/env bash
# Checks the contracts of the kura-netpol examples (issue 3): render-netpol's
# YAML stream validates with kubernetes-validate, cidr-aggregate's output equals
# Python's ipaddress.collapse_addresses, and bad input exits non-zero with a
# one-line reason. Meant to be called from .ci/examples after
# `cargo build -p kura-examples --examples`; EX overrides the binaries' folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
fail() { echo "examples: $*" >&2; exit 1; }
expect_fail() { local what=$1; shift
  if "$@" >"$work/out" 2>"$work/err"; then fail "$what: expected failure"; fi
  [ "$(wc -l <"$work/err")" -eq 1 ] || { cat "$work/err"; fail "$what: expected a one-line reason"; }
  echo "ok (rejected): $what: $(cat "$work/err")"; }
ex=${EX:-target/debug/examples}
command -v kubernetes-validate >/dev/null || fail "kubernetes-validate is not installed"

echo "--- render-netpol"
"$ex/render-netpol" --instance kura-acme --namespace kura --account acme \
  --client-cidr 172.16.0.0/22 --client-cidr 172.16.4.0/22 --client-cidr fd00:1::/48 \
  --egress-bandwidth 750M --primary-pod kura-acme-1 >"$work/netpol.yaml"
[ "$(grep -c '^---$' "$work/netpol.yaml")" -eq 2 ] || fail "render-netpol: expected two YAML documents"
grep -q 'cidr: 172.16.0.0/21' "$work/netpol.yaml" || fail "render-netpol: client CIDRs not aggregated"
grep -q 'statefulset.kubernetes.io/pod-name: kura-acme-1' "$work/netpol.yaml" || fail "render-netpol: not pinned"
kubernetes-validate --strict "$work/netpol.yaml"
expect_fail "any-address client CIDR" "$ex/render-netpol" --instance a --namespace kura --account acme --client-cidr 0.0.0.0/0
expect_fail "client CIDR with host bits" "$ex/render-netpol" --instance a --namespace kura --account acme --client-cidr 10.0.0.1/8
expect_fail "invalid bandwidth" "$ex/render-netpol" --instance a --namespace kura --account acme --egress-bandwidth 10Mbit
expect_fail "invalid instance name" "$ex/render-netpol" --instance Kura --namespace kura --account acme
expect_fail "missing --account" "$ex/render-netpol" --instance a --namespace kura

echo "--- cidr-aggregate (checked against Python's ipaddress.collapse_addresses)"
printf '10.0.0.0/25\n10.0.0.128/25\n\n# comment\nfd00::1\n192.168.0.1\n10.0.1.0/24\nfd00::/127\n' >"$work/cidrs.txt"
"$ex/cidr-aggregate" <"$work/cidrs.txt" >"$work/agg.txt"
python3 - "$work/cidrs.txt" "$work/agg.txt" <<'PY'
import ipaddress, sys
nets = [ipaddress.ip_network(l.split('#')[0].strip()) for l in open(sys.argv[1]) if l.split('#')[0].strip()]
want = [str(n) for v in (4, 6) for n in ipaddress.collapse_addresses([x for x in nets if x.version == v])]
got = open(sys.argv[2]).read().split()
assert got == want, (got, want)
print("cidr-aggregate matches Python:", " ".join(got))
PY
expect_fail "invalid CIDR line" sh -c "printf '10.0.0.0/8\nnope\n' | '$ex/cidr-aggregate'"
echo "kura-netpol examples: all ok"
