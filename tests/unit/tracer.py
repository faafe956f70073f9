"""A packet tracer for rendered rulesets, like kube-proxy's proxier_test.go tracePacket.

It follows the first packet of a new connection through nat PREROUTING (or OUTPUT for packets
the node sends itself), the filter chain that packet meets next (INPUT, FORWARD or OUTPUT, seen
with the DNATed destination) and nat POSTROUTING. It understands exactly the match syntax the
renderer writes and fails loudly on anything else, so new syntax cannot be silently ignored.

`-m statistic` rules may or may not match, so the tracer follows both ways and returns every
path: the set of DNAT destinations is then the set of endpoints a connection can reach.
`-m recent --rcheck` never matches: the traced client has no affinity entry yet.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from pykubeproxy.backends.iptables.ruleset import Ruleset

TERMINAL_TARGETS = frozenset({"ACCEPT", "DROP", "REJECT", "DNAT", "MASQUERADE"})
# Options that take one value, and options that take none.
_VALUED = frozenset(
    {"-s", "-d", "-p", "--dport", "--dst-type", "--src-type", "--comment", "--ctstate"}
    | {"--mark", "--mode", "--probability", "--seconds", "--name", "--mask"}
)
_FLAGS = frozenset({"--rcheck", "--set", "--reap", "--rsource"})
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@dataclass(frozen=True, slots=True)
class Packet:
    src: str
    dst: str
    dport: int
    proto: str = "tcp"


@dataclass(frozen=True, slots=True)
class Path:
    """One way a packet can go through the rules."""

    dnat: str | None  # "ip:port" the packet was DNATed to, if it was
    verdict: str  # the filter table's verdict: ACCEPT, DROP or REJECT
    verdict_chain: str | None  # the chain whose rule gave the verdict (None: chain policy)
    masqueraded: bool  # nat POSTROUTING masqueraded it
    chains: tuple[str, ...]  # every chain entered, as "table/chain", in order


@dataclass(frozen=True, slots=True)
class Trace:
    paths: tuple[Path, ...]

    @property
    def destinations(self) -> frozenset[str]:
        """Where an accepted connection can end up (only DNATed paths)."""
        return frozenset(p.dnat for p in self.paths if p.dnat and p.verdict == "ACCEPT")

    @property
    def verdicts(self) -> frozenset[str]:
        return frozenset(p.verdict for p in self.paths)

    @property
    def always_masqueraded(self) -> bool:
        return all(p.masqueraded for p in self.paths)

    @property
    def never_masqueraded(self) -> bool:
        return not any(p.masqueraded for p in self.paths)

    def path_to(self, destination: str) -> Path:
        (path,) = (p for p in self.paths if p.dnat == destination)
        return path


@dataclass(frozen=True, slots=True)
class _State:
    src: str
    dst: str
    dport: int
    proto: str
    mark: int = 0
    dnat: str | None = None
    chains: tuple[str, ...] = ()
    verdict_chain: str | None = None


@dataclass(frozen=True, slots=True)
class _Match:
    option: str
    value: str | None
    negated: bool


@dataclass(frozen=True, slots=True)
class Rule:
    matches: tuple[_Match, ...]
    verb: str | None  # "-j", "-g" or None for a rule without target
    target: str | None
    target_args: tuple[str, ...]

    @property
    def random(self) -> bool:
        return any(m.option == "--probability" for m in self.matches)


def parse_rule(text: str) -> Rule:
    """One rule in the renderer's syntax (the text after `-A CHAIN`)."""
    tokens = shlex.split(text)
    matches: list[_Match] = []
    negated = False
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in ("-j", "-g"):
            return Rule(tuple(matches), token, tokens[index + 1], tuple(tokens[index + 2 :]))
        if token == "!":
            negated = True
            index += 1
            continue
        if token == "-m":
            index += 2  # the module name; its options are understood on their own
            continue
        if token in _VALUED:
            matches.append(_Match(token, tokens[index + 1], negated))
            index += 2
        elif token in _FLAGS:
            matches.append(_Match(token, None, negated))
            index += 1
        else:
            raise ValueError(f"tracer does not understand {token!r} in {text!r}")
        negated = False
    return Rule(tuple(matches), None, None, ())


def _mark_and_mask(value: str) -> tuple[int, int]:
    mark, _, mask = value.partition("/")
    return int(mark, 16), int(mask, 16) if mask else 0xFFFFFFFF


class Tracer:
    """Follows packets through one Ruleset, for a node owning `local_addresses`."""

    def __init__(self, ruleset: Ruleset, *, local_addresses: Iterable[str]) -> None:
        self._local = frozenset(local_addresses)
        self._rules = {
            table.name: {chain.name: [parse_rule(r) for r in chain.rules] for chain in table.chains}
            for table in ruleset
        }

    def _is_local(self, ip: str) -> bool:
        return ip in self._local or ipaddress.ip_address(ip) in _LOOPBACK

    def trace(self, packet: Packet) -> Trace:
        from_node = self._is_local(packet.src)
        start = _State(packet.src, packet.dst, packet.dport, packet.proto)
        paths = []
        for after_nat, _ in self._chain("nat", "OUTPUT" if from_node else "PREROUTING", start):
            if from_node:
                hook = "OUTPUT"
            else:
                hook = "INPUT" if self._is_local(after_nat.dst) else "FORWARD"
            for after_filter, verdict in self._chain("filter", hook, after_nat):
                verdict = verdict or "ACCEPT"
                masqueraded = verdict == "ACCEPT" and any(
                    v == "MASQUERADE" for _, v in self._chain("nat", "POSTROUTING", after_filter)
                )
                chains = after_filter.chains
                if masqueraded:
                    chains = (*chains, "nat/POSTROUTING")
                paths.append(
                    Path(
                        dnat=after_filter.dnat,
                        verdict=verdict,
                        verdict_chain=after_filter.verdict_chain,
                        masqueraded=masqueraded,
                        chains=chains,
                    )
                )
        return Trace(tuple(paths))

    # --- walking chains ---------------------------------------------------------------------

    def _chain(self, table: str, chain: str, state: _State) -> Iterator[tuple[_State, str | None]]:
        """Every (state, terminal target) a chain can end with; None when it returns."""
        if chain not in self._rules[table]:
            raise KeyError(f"jump to undeclared chain {table}/{chain}")
        yield from self._from(
            table, chain, 0, replace(state, chains=(*state.chains, f"{table}/{chain}"))
        )

    def _from(
        self, table: str, chain: str, start: int, state: _State
    ) -> Iterator[tuple[_State, str | None]]:
        rules = self._rules[table][chain]
        for index in range(start, len(rules)):
            rule = rules[index]
            if not all(self._matches(m, state) for m in rule.matches):
                continue
            if rule.random:
                yield from self._from(table, chain, index + 1, state)  # this rule not picked
            yield from self._take(table, chain, index, rule, state)
            return
        yield state, None

    def _take(
        self, table: str, chain: str, index: int, rule: Rule, state: _State
    ) -> Iterator[tuple[_State, str | None]]:
        target = rule.target
        if target is None:
            yield from self._from(table, chain, index + 1, state)
        elif target == "RETURN":
            yield state, None
        elif target in TERMINAL_TARGETS:
            yield self._terminate(rule, replace(state, verdict_chain=chain)), target
        elif target == "MARK":
            (option, value) = rule.target_args
            assert option == "--set-xmark", rule
            mark, mask = _mark_and_mask(value)
            yield from self._from(
                table, chain, index + 1, replace(state, mark=(state.mark & ~mask) ^ mark)
            )
        else:
            for after, verdict in self._chain(table, target, state):
                if verdict is not None or rule.verb == "-g":
                    yield after, verdict
                else:
                    yield from self._from(table, chain, index + 1, after)

    @staticmethod
    def _terminate(rule: Rule, state: _State) -> _State:
        if rule.target != "DNAT":
            return state
        (option, destination) = rule.target_args
        assert option == "--to-destination", rule
        ip, _, port = destination.rpartition(":")
        return replace(state, dst=ip, dport=int(port), dnat=destination)

    def _matches(self, match: _Match, state: _State) -> bool:
        return self._test(match, state) != match.negated

    def _test(self, match: _Match, state: _State) -> bool:
        option, value = match.option, match.value or ""
        if option == "-s":
            return ipaddress.ip_address(state.src) in ipaddress.ip_network(value)
        if option == "-d":
            return ipaddress.ip_address(state.dst) in ipaddress.ip_network(value)
        if option == "-p":
            return state.proto == value
        if option == "--dport":
            return state.dport == int(value)
        if option == "--dst-type":
            return value == "LOCAL" and self._is_local(state.dst)
        if option == "--src-type":
            return value == "LOCAL" and self._is_local(state.src)
        if option == "--ctstate":
            return "NEW" in value.split(",")  # we trace a connection's first packet
        if option == "--mark":
            mark, mask = _mark_and_mask(value)
            return state.mark & mask == mark
        # The client has no affinity entry yet, so --rcheck fails. Comments, the statistic mode
        # and probability (handled by the caller), recent --set and its options always match.
        return option != "--rcheck"
