"""Parse nvdisasm listings into functions, basic blocks and loops.

Loops are found the textbook way rather than by address ranges alone: basic blocks from
branch targets and control transfers, dominators over the control-flow graph, and for each
back edge (a jump to a block that dominates the jumping block) the natural loop it closes.
Loops sharing a header are merged; a loop's depth is the number of loops that contain its
header. Only code reachable from the kernel's entry (and from CALL targets) is considered,
so the self-branch trap nvdisasm shows after the last EXIT is not a loop.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_SECTION_RE = re.compile(r'^\s*\.section\s+([^,\s]+)')
_INSTR_RE = re.compile(r'^\s*/\*([0-9a-fA-F]+)\*/\s+(.*?)\s*;')
_LABEL_RE = re.compile(r'^\s*([^\s/:][^\s:]*):\s*$')
_PRED_RE = re.compile(r'^(@!?U?P(?:T|\d+))\s+(.*)$')
_TARGET_RE = re.compile(r'`\(([^)]+)\)')
_OPERAND_PRED_RE = re.compile(r'^(!?U?P(?:T|\d+))\s*,')
_WORD_RE = re.compile(r'\.word\s+(0x[0-9a-fA-F]+|\d+)')

_BRANCHES = {"BRA", "BRX", "JMP", "JMX"}
_RETURNS = {"EXIT", "RET", "KILL", "BPT"}
_CALLS = {"CALL", "JCAL"}


@dataclass(frozen=True)
class Instruction:
    offset: int
    predicate: str          # "" when unpredicated; "@P0", "@!P1", "@UP0", "@!PT" ...
    opcode: str             # full mnemonic with modifiers, e.g. "LDS.128", "LDG.E.128.CONSTANT"
    operands: str
    target: str | None = None   # label of a branch / call / BSSY target
    branch_predicate: str = ""  # sm_100+ writes `BRA.U !UP0, target`: the condition as an operand

    @property
    def base(self) -> str:
        """The mnemonic without modifiers: "LDS" for "LDS.128"."""
        return self.opcode.split(".", 1)[0]

    @property
    def modifiers(self) -> tuple[str, ...]:
        return tuple(self.opcode.split(".")[1:])

    @property
    def conditional(self) -> bool:
        return self.predicate not in ("", "@PT", "@UPT") or self.branch_predicate not in ("", "PT", "UPT")

    @property
    def guarded(self) -> bool:
        """Executed under a guard predicate (@P0 ...): issued whether or not it is true."""
        return self.predicate not in ("", "@PT", "@UPT")

    @property
    def never_executes(self) -> bool:
        return self.predicate in ("@!PT", "@!UPT") or self.branch_predicate in ("!PT", "!UPT")

    def __str__(self) -> str:
        pred = f"{self.predicate} " if self.predicate else ""
        return f"/*{self.offset:04x}*/ {pred}{self.opcode} {self.operands}".rstrip()


@dataclass
class Block:
    index: int
    instructions: list[Instruction]
    successors: list[int] = field(default_factory=list)
    predecessors: list[int] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.instructions[0].offset

    @property
    def end(self) -> int:
        return self.instructions[-1].offset


@dataclass
class Loop:
    header: int                 # block index of the loop header
    blocks: tuple[int, ...]     # block indices of the body (header included), address order
    latches: tuple[int, ...]    # blocks whose back edge closes the loop
    depth: int = 1              # 1 = outermost
    innermost: bool = True
    natural: bool = True        # False: an irreducible retreating edge, body taken by address range
    in_call: bool = False       # in a subroutine the kernel CALLs (a __noinline__ function), not its body


@dataclass
class SassFunction:
    name: str
    instructions: list[Instruction]
    labels: dict[str, int]
    text: str
    max_threads: int | None = None      # from __launch_bounds__ (EIATTR_MAX_THREADS), if any
    blocks: list[Block] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)
    unresolved_branches: int = 0        # indirect branches (BRX/JMX) whose targets are unknown

    def loop_instructions(self, loop: Loop) -> list[Instruction]:
        return [ins for b in loop.blocks for ins in self.blocks[b].instructions]


def _parse_instruction(offset: int, body: str) -> Instruction:
    predicate = ""
    m = _PRED_RE.match(body)
    if m:
        predicate, body = m.group(1), m.group(2)
    parts = body.split(None, 1)
    opcode = parts[0] if parts else ""
    operands = parts[1].strip() if len(parts) > 1 else ""
    t = _TARGET_RE.search(operands)
    branch_predicate = ""
    if opcode.split(".", 1)[0] in _BRANCHES | _RETURNS:
        m = _OPERAND_PRED_RE.match(operands)
        if m:
            branch_predicate = m.group(1)
    return Instruction(offset, predicate, opcode, operands, t.group(1) if t else None, branch_predicate)


def split_sections(listing: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines():
        m = _SECTION_RE.match(line)
        if m:
            current = sections.setdefault(m.group(1), [])
        if current is not None:
            current.append(line)
    return sections


def _max_threads(info_lines: list[str]) -> int | None:
    """Threads per block from EIATTR_MAX_THREADS / EIATTR_REQNTID (x*y*z), if present."""
    for i, line in enumerate(info_lines):
        if "EIATTR_MAX_THREADS" in line or "EIATTR_REQNTID" in line:
            words = []
            for nxt in info_lines[i + 1:]:
                if "EIATTR_" in nxt:
                    break
                words += [int(w, 0) for w in _WORD_RE.findall(nxt)]
            if len(words) >= 3:
                return max(1, words[0]) * max(1, words[1]) * max(1, words[2])
    return None


def parse_function(name: str, sections: dict[str, list[str]]) -> SassFunction:
    """One function from ``split_sections(listing)``: instructions, blocks and loops."""
    lines = sections.get(f".text.{name}")
    if lines is None:
        raise KeyError(name)
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    pending: list[str] = []
    for line in lines:
        m = _INSTR_RE.match(line)
        if m:
            ins = _parse_instruction(int(m.group(1), 16), m.group(2))
            instructions.append(ins)
            for lab in pending:
                labels[lab] = ins.offset
            pending = []
            continue
        m = _LABEL_RE.match(line)
        if m:
            pending.append(m.group(1))
    end = instructions[-1].offset + 16 if instructions else 0
    for lab in pending:
        labels[lab] = end
    fn = SassFunction(name, instructions, labels, "\n".join(lines),
                      _max_threads(sections.get(f".nv.info.{name}", [])))
    _build_cfg(fn)
    _find_loops(fn)
    return fn


def function_names(sections: dict[str, list[str]]) -> list[str]:
    return [sec[len(".text."):] for sec in sections if sec.startswith(".text.")]


def parse_listing(listing: str) -> dict[str, SassFunction]:
    """Every function (kernel or device subroutine section) in an nvdisasm listing, by name."""
    sections = split_sections(listing)
    return {name: parse_function(name, sections) for name in function_names(sections)}


# --------------------------------------------------------------------------- control flow
def _build_cfg(fn: SassFunction) -> None:
    ins = fn.instructions
    if not ins:
        return
    index_of = {x.offset: i for i, x in enumerate(ins)}
    leaders = {0}
    for i, x in enumerate(ins):
        if x.base in _BRANCHES | _RETURNS | _CALLS:
            leaders.add(i + 1)
            if x.target in fn.labels and fn.labels[x.target] in index_of:
                leaders.add(index_of[fn.labels[x.target]])
    for off in fn.labels.values():
        if off in index_of:
            leaders.add(index_of[off])
    starts = sorted(i for i in leaders if i < len(ins))
    block_of_ins: dict[int, int] = {}
    for b, s in enumerate(starts):
        e = starts[b + 1] if b + 1 < len(starts) else len(ins)
        fn.blocks.append(Block(b, ins[s:e]))
        for i in range(s, e):
            block_of_ins[i] = b

    def block_at(label):
        off = fn.labels.get(label)
        return block_of_ins.get(index_of[off]) if off in index_of else None

    for blk in fn.blocks:
        last = blk.instructions[-1]
        nxt = blk.index + 1 if blk.index + 1 < len(fn.blocks) else None
        succ: list[int] = []
        if last.base in _BRANCHES:
            tgt = block_at(last.target) if last.target else None
            if tgt is None:
                fn.unresolved_branches += 1
            elif not last.never_executes:
                succ.append(tgt)
            if (last.conditional or tgt is None) and nxt is not None:
                succ.append(nxt)
        elif last.base in _RETURNS:
            if last.conditional and nxt is not None:
                succ.append(nxt)
        elif last.base in _CALLS:
            tgt = block_at(last.target) if last.target else None
            if tgt is not None:
                succ.append(tgt)
            if nxt is not None:
                succ.append(nxt)
        elif nxt is not None:
            succ.append(nxt)
        blk.successors = list(dict.fromkeys(succ))
    for blk in fn.blocks:
        for s in blk.successors:
            fn.blocks[s].predecessors.append(blk.index)


def _reverse_postorder(fn: SassFunction) -> list[int]:
    seen, order = set(), []
    stack = [(0, iter(fn.blocks[0].successors))] if fn.blocks else []
    seen.add(0)
    while stack:
        node, it = stack[-1]
        for s in it:
            if s not in seen:
                seen.add(s)
                stack.append((s, iter(fn.blocks[s].successors)))
                break
        else:
            order.append(node)
            stack.pop()
    return order[::-1]


def _retreating_edges(fn: SassFunction) -> set[tuple[int, int]]:
    """Edges u -> h of a depth-first search from the entry where h is an ancestor of u (on the
    DFS stack): every cycle contains one. Address order is not a proxy: ptxas places cold
    blocks (an mbarrier try-wait retry, say) after the function's EXIT, and their jump back
    to the join point is a backward branch by address that closes no cycle of its own."""
    out: set[tuple[int, int]] = set()
    if not fn.blocks:
        return out
    on_stack, seen = {0}, {0}
    stack = [(0, iter(fn.blocks[0].successors))]
    while stack:
        node, it = stack[-1]
        for t in it:
            if t in on_stack:
                out.add((node, t))
            elif t not in seen:
                seen.add(t)
                on_stack.add(t)
                stack.append((t, iter(fn.blocks[t].successors)))
                break
        else:
            on_stack.discard(node)
            stack.pop()
    return out


def _dominators(fn: SassFunction, rpo: list[int]) -> dict[int, int]:
    """Immediate dominators (Cooper, Harvey & Kennedy's iterative algorithm)."""
    position = {b: i for i, b in enumerate(rpo)}
    idom = {rpo[0]: rpo[0]}

    def intersect(a, b):
        while a != b:
            while position[a] > position[b]:
                a = idom[a]
            while position[b] > position[a]:
                b = idom[b]
        return a

    changed = True
    while changed:
        changed = False
        for b in rpo[1:]:
            preds = [p for p in fn.blocks[b].predecessors if p in idom]
            if not preds:
                continue
            new = preds[0]
            for p in preds[1:]:
                new = intersect(p, new)
            if idom.get(b) != new:
                idom[b] = new
                changed = True
    return idom


def _dominates(idom: dict[int, int], a: int, b: int) -> bool:
    while True:
        if a == b:
            return True
        parent = idom.get(b)
        if parent is None or parent == b:
            return False
        b = parent


def _find_loops(fn: SassFunction) -> None:
    if not fn.blocks:
        return
    rpo = _reverse_postorder(fn)
    reachable = set(rpo)
    idom = _dominators(fn, rpo)
    bodies: dict[int, set[int]] = {}
    latches: dict[int, set[int]] = {}
    natural: dict[int, bool] = {}
    for u, h in sorted(_retreating_edges(fn)):
        if _dominates(idom, h, u):
            body = {h}
            work = [u]
            while work:
                n = work.pop()
                if n not in body:
                    body.add(n)
                    work.extend(p for p in fn.blocks[n].predecessors if p in reachable)
            natural.setdefault(h, True)
        else:
            # A retreating edge into a block that does not dominate it (irreducible
            # flow, rare in ptxas output): take the address range as the body.
            lo, hi = sorted((fn.blocks[h].start, fn.blocks[u].start))
            body = {b for b in reachable if lo <= fn.blocks[b].start <= hi}
            natural[h] = False
        bodies.setdefault(h, set()).update(body)
        latches.setdefault(h, set()).add(u)
    loops = [Loop(h, tuple(sorted(bodies[h])), tuple(sorted(latches[h])), natural=natural[h])
             for h in sorted(bodies)]
    body_blocks = _kernel_body(fn)
    for lp in loops:
        lp.depth = sum(1 for other in loops if lp.header in other.blocks)
        lp.innermost = not any(o is not lp and o.header in lp.blocks for o in loops)
        lp.in_call = lp.header not in body_blocks
    fn.loops = loops


def _kernel_body(fn: SassFunction) -> set[int]:
    """The blocks reachable from the entry without entering a CALL's target: the kernel's own
    code, not that of the subroutines it calls."""
    seen, work = {0}, [0]
    while work:
        b = work.pop()
        last = fn.blocks[b].instructions[-1]
        skip = None
        if last.base in _CALLS and last.target in fn.labels:
            skip = next((s for s in fn.blocks[b].successors if fn.blocks[s].start == fn.labels[last.target]), None)
        for s in fn.blocks[b].successors:
            if s != skip and s not in seen:
                seen.add(s)
                work.append(s)
    return seen


def best_loop_path(fn: SassFunction, loop: Loop, weight) -> list[int] | None:
    """The blocks of the path through one iteration that maximises the sum of ``weight(block)``.

    ``weight`` returns a tuple (compared lexicographically, which is compatible with addition,
    so the best path is built from best prefixes). A path runs from the header to a latch along
    forward edges inside the body (to higher addresses, which is how ptxas lays loops out).
    None when the layout does not allow it (header not first, or no latch reached).
    """
    order = sorted(loop.blocks, key=lambda b: fn.blocks[b].start)
    if not order or order[0] != loop.header:
        return None
    body = set(loop.blocks)
    best: dict[int, tuple[tuple, list[int]]] = {}
    for b in order:
        w = tuple(weight(b))
        if b == loop.header:
            best[b] = (w, [b])
            continue
        preds = [p for p in fn.blocks[b].predecessors
                 if p in body and p in best and fn.blocks[p].start < fn.blocks[b].start]
        if not preds:
            continue
        p = max(preds, key=lambda q: best[q][0])
        best[b] = (tuple(x + y for x, y in zip(best[p][0], w)), best[p][1] + [b])
    latches = [lt for lt in loop.latches if lt in best]
    if not latches:
        return None
    return best[max(latches, key=lambda lt: best[lt][0])][1]
