"""Search across servers: rank the tools an agent may call by a query, over cached tool lists.

The score is BM25 over each tool's name (counted twice: a name says more than a sentence)
and description, with the corpus made only of the tools the agent may see, so a denied tool
changes no score and no count. Every hit says which query words it matched, so a ranking
can be explained. Lists not yet cached are fetched first, in parallel, within the call's
deadline; a server that cannot be listed in time is named in `unavailable`, not waited for.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from . import policy
from .errors import GatewayError

DEFAULT_LIMIT = 5
NAME_WEIGHT = 2
K1, B = 1.2, 0.75
MAX_PARALLEL_LISTS = 4

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def words(text: str) -> list[str]:
    """Lower-case words of a name or sentence: read_file, readFile and 'Read a file' share 'read'."""
    return [w.lower() for w in _WORD.findall(text or "")]


@dataclass(frozen=True)
class Hit:
    server: str
    tool: dict[str, Any]
    score: float
    matched: tuple[str, ...]


def rank(query: str, candidates: Iterable[tuple[str, dict[str, Any]]]) -> list[Hit]:
    """Candidates scoring above zero, best first; ties keep the candidates' order."""
    docs = []
    for server, tool in candidates:
        terms = words(tool.get("name", "")) * NAME_WEIGHT + words(str(tool.get("description") or ""))
        docs.append((server, tool, Counter(terms), len(terms)))
    if not docs:
        return []
    query_words = list(dict.fromkeys(words(query)))
    average = sum(length for *_, length in docs) / len(docs) or 1
    frequency = {w: sum(1 for *_, counts, _ in docs if w in counts) for w in query_words}
    hits = []
    for server, tool, counts, length in docs:
        score, matched = 0.0, []
        for w in query_words:
            tf = counts.get(w, 0)
            if not tf:
                continue
            idf = math.log(1 + (len(docs) - frequency[w] + 0.5) / (frequency[w] + 0.5))
            score += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / average))
            matched.append(w)
        if score > 0:
            hits.append(Hit(server, tool, round(score, 3), tuple(matched)))
    return sorted(hits, key=lambda h: -h.score)


def gather(specs: list, list_visible: Callable[[Any, float], list[dict]], is_cached: Callable[[Any], bool],
           deadline: float) -> tuple[list[tuple[str, list[dict]]], dict[str, str]]:
    """Each server's visible tools, in the given order, and why the others could not be listed.

    Servers whose lists are not cached are started first; nothing is waited for past `deadline`.
    """
    lists: dict[str, list[dict]] = {}
    unavailable: dict[str, str] = {}
    ordered = sorted(specs, key=lambda spec: is_cached(spec))  # False (not cached) first
    pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_LISTS, len(ordered) or 1), thread_name_prefix="gateway-search")
    try:
        futures = {
            pool.submit(list_visible, spec, max(deadline - time.monotonic(), 0.001)): spec.name for spec in ordered
        }
        done, _ = wait(futures, timeout=max(deadline - time.monotonic(), 0))
        for future, name in futures.items():
            if future not in done:
                unavailable[name] = "not listed before the call's deadline"
            elif isinstance(future.exception(), GatewayError):
                unavailable[name] = future.exception().message
            elif future.exception() is not None:
                raise future.exception()
            else:
                lists[name] = future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [(spec.name, lists[spec.name]) for spec in specs if spec.name in lists], unavailable


def select(arguments: dict[str, Any], lists: list[tuple[str, list[dict]]],
           estimate_tokens: Callable[[Any], int]) -> dict[str, Any]:
    """The answer of a search: matching tools (each with its server) within limit and token budget."""
    pattern, query = arguments.get("pattern"), arguments.get("query")  # pattern checked by the caller
    wanted = split_names(arguments.get("names"))
    candidates = [
        (server, tool) for server, tools in lists for tool in tools
        if (wanted is None or tool["name"] in wanted) and (pattern is None or policy.matches(pattern, tool["name"]))
    ]
    if query is not None:
        hits = rank(query, candidates)
        limit = arguments.get("limit", DEFAULT_LIMIT)
        entries = [{"server": h.server, **h.tool, "score": h.score, "matched": list(h.matched)} for h in hits]
    else:
        limit = arguments.get("limit")
        entries = [{"server": server, **tool} for server, tool in candidates]
    matched = len(entries)
    budget = arguments.get("max_schema_tokens")
    returned, used = [], 0
    for entry in entries[:limit]:
        cost = estimate_tokens(entry)
        if budget is not None and used + cost > budget:
            break
        returned.append(entry)
        used += cost
    answer: dict[str, Any] = {"query": query} if query is not None else {}
    answer.update({
        "tools": returned,
        "servers_searched": [server for server, _ in lists],
        "total_available": sum(len(tools) for _, tools in lists),
        "matched": matched,
        "returned": len(returned),
        "tokens_used": used,
    })
    return answer


def is_search(arguments: dict[str, Any]) -> bool:
    """get_server_tools searches when `server` is omitted or '*', or when a query is given."""
    return arguments.get("server") in (None, "*") or arguments.get("query") is not None


def split_names(names: str | None) -> set[str] | None:
    if names is None:
        return None
    return {n.strip() for n in names.split(",") if n.strip()}

