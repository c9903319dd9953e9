"""Ordering a workflow's nodes for execution (no torch here).

:func:`execution_order` finds every node an output depends on, in an order where each node
comes after its upstream nodes, and refuses cycles naming a node on the cycle.
:class:`Scheduler` hands out nodes whose dependencies are done; a node may ask to wait for
more upstream nodes (lazy inputs), which the scheduler then adds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence

from comfyfleet.workflow.graph import Link, Workflow


class GraphError(ValueError):
    """The graph cannot be executed (a link to a missing node, an unknown node)."""

    def __init__(self, node_id: str, message: str) -> None:
        super().__init__(message)
        self.node_id = node_id


class DependencyCycleError(GraphError):
    """The nodes depend on each other in a loop. ``node_id`` is a node on the cycle."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = tuple(cycle)
        path = " -> ".join([*self.cycle, self.cycle[0]])
        super().__init__(self.cycle[0], f"Dependency cycle detected at node {cycle[0]}: {path}")


IsLazy = Callable[[str, str], bool]
"""``is_lazy(node_id, input_name)``: whether that input is only evaluated on demand."""


def _never_lazy(node_id: str, input_name: str) -> bool:
    return False


def upstream_links(
    workflow: Workflow, node_id: str, is_lazy: IsLazy | None = None
) -> list[tuple[str, Link]]:
    """The ``(input, link)`` pairs of a node, leaving out lazy inputs when ``is_lazy`` given."""
    node = workflow.nodes.get(node_id)
    if node is None:
        raise GraphError(node_id, f"node {node_id!r} does not exist")
    found: list[tuple[str, Link]] = []
    for name, link in node.links():
        if is_lazy is not None and is_lazy(node_id, name):
            continue
        if link.node_id not in workflow.nodes:
            raise GraphError(
                node_id, f"node {node_id} input {name!r} links to missing node {link.node_id!r}"
            )
        found.append((name, link))
    return found


def execution_order(
    workflow: Workflow, targets: Iterable[str], is_lazy: IsLazy | None = None
) -> list[str]:
    """Every node the targets depend on (targets included), upstream first.

    Follows all links unless ``is_lazy`` excludes some. Raises :class:`DependencyCycleError`
    naming a node on a cycle, or :class:`GraphError` for links to missing nodes.
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in targets:
        if state.get(root) == 2:
            continue
        path: list[str] = [root]
        stack: list[Iterator[tuple[str, Link]]] = [iter(upstream_links(workflow, root, is_lazy))]
        state[root] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                done = path.pop()
                state[done] = 2
                order.append(done)
                continue
            upstream = step[1].node_id
            mark = state.get(upstream)
            if mark == 2:
                continue
            if mark == 1:
                raise DependencyCycleError(path[path.index(upstream) :])
            state[upstream] = 1
            path.append(upstream)
            stack.append(iter(upstream_links(workflow, upstream, is_lazy)))
    return order


class Scheduler:
    """Tracks which nodes still have to run and which of them are ready.

    ``done`` nodes (e.g. served from cache) are never scheduled and stop the walk upstream.
    Ready output nodes are handed out first, so results reach the client as early as they can;
    other ready nodes come in the order they became ready.
    """

    def __init__(
        self,
        workflow: Workflow,
        targets: Iterable[str],
        *,
        is_output: Callable[[str], bool],
        is_lazy: IsLazy | None = None,
        done: Collection[str] = (),
    ) -> None:
        self._workflow = workflow
        self._is_output = is_output
        self._is_lazy = is_lazy or _never_lazy
        self._done: set[str] = set(done)
        self._waiting_on: dict[str, set[str]] = {}
        self._dependents: dict[str, set[str]] = {}
        self._ready_outputs: deque[str] = deque()
        self._ready_others: deque[str] = deque()
        for target in targets:
            self.require(target)

    @property
    def finished(self) -> bool:
        """True when no node is left to run."""
        return not self._waiting_on

    def pending(self) -> list[str]:
        """Nodes still to run."""
        return list(self._waiting_on)

    def is_done(self, node_id: str) -> bool:
        return node_id in self._done

    def require(self, node_id: str) -> None:
        """Make ``node_id`` (and what it eagerly depends on) part of the work."""
        if node_id in self._done or node_id in self._waiting_on:
            return
        order = execution_order(self._workflow, [node_id], self._lazy_unless_done)
        for nid in order:
            if nid in self._done or nid in self._waiting_on:
                continue
            deps = {
                link.node_id
                for name, link in upstream_links(self._workflow, nid)
                if not self._is_lazy(nid, name) and link.node_id not in self._done
            }
            self._add(nid, deps)

    def _lazy_unless_done(self, node_id: str, input_name: str) -> bool:
        return node_id in self._done or self._is_lazy(node_id, input_name)

    def _add(self, node_id: str, deps: set[str]) -> None:
        self._waiting_on[node_id] = deps
        for dep in deps:
            self._dependents.setdefault(dep, set()).add(node_id)
        if not deps:
            self._push_ready(node_id)

    def _push_ready(self, node_id: str) -> None:
        if self._is_output(node_id):
            self._ready_outputs.append(node_id)
        else:
            self._ready_others.append(node_id)

    def next(self) -> str | None:
        """The next node to run, or ``None`` when nothing is ready."""
        if self._ready_outputs:
            return self._ready_outputs.popleft()
        if self._ready_others:
            return self._ready_others.popleft()
        return None

    def complete(self, node_id: str) -> None:
        """Mark ``node_id`` as run; its dependents may become ready."""
        self._waiting_on.pop(node_id, None)
        self._done.add(node_id)
        for dependent in sorted(self._dependents.pop(node_id, ())):
            deps = self._waiting_on.get(dependent)
            if deps is None:
                continue
            deps.discard(node_id)
            if not deps:
                self._push_ready(dependent)

    def wait_for(self, node_id: str, upstream: Iterable[str]) -> bool:
        """Make ``node_id`` wait for ``upstream`` nodes (a node asked for lazy inputs).

        Returns ``False`` when every one of them is already done (nothing to wait for).
        """
        missing = {u for u in upstream if u not in self._done}
        if not missing:
            return False
        for dep in missing:
            self.require(dep)
            self._dependents.setdefault(dep, set()).add(node_id)
        self._waiting_on[node_id] = missing
        return True
