"""A recording, in-memory stand-in for the Elasticsearch transport (test helper, imported by name).

``Elasticsearch.perform_request`` is replaced (via monkeypatch) by :meth:`FakeES.perform_request`,
so the real client builds every request (paths, params, bodies, NDJSON bulk lines) and we
record it, then answer from a dict of indices. Scoring follows Elasticsearch's documented
semantics: ``maxSimDotProduct`` sums per-query-token maxima; against ``bit`` documents a float
query sums its components where a bit is set; ``script_score`` refuses negative scores;
the ``rescorer`` retriever rescores the kNN window with ``query_weight``/``rescore_query_weight``.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig, ObjectApiResponse
from elasticsearch import ApiError, BadRequestError, ConflictError, NotFoundError


def _meta(status: int) -> ApiResponseMeta:
    return ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders({"x-elastic-product": "Elasticsearch"}),
                           duration=0.0, node=NodeConfig("http", "localhost", 9200))


def _err(cls, status: int, reason: str):
    body = {"error": {"root_cause": [{"type": "x", "reason": reason}], "type": "x", "reason": reason},
            "status": status}
    return cls(message=reason, meta=_meta(status), body=body)


@dataclass
class Call:
    endpoint: str
    method: str
    path: str
    params: dict[str, Any]
    body: Any


@dataclass
class FakeES:
    license_type: str = "trial"
    indices: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, set[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    seq: int = 0

    # ------------------------------------------------------------ plumbing
    def perform_request(self, client, method, path, *, params=None, headers=None, body=None, endpoint_id=None,
                        path_parts=None, **_):
        params = dict(params or {})
        if isinstance(body, list | tuple):
            body = [json.loads(x) if isinstance(x, bytes | str) else x for x in body]
        body = copy.deepcopy(body)           # what went over the wire, not a live reference
        self.calls.append(Call(endpoint_id or "?", method, path, params, body))
        handler = getattr(self, "h_" + (endpoint_id or "?").replace(".", "_"), None)
        if handler is None:
            raise AssertionError(f"fake Elasticsearch has no handler for {endpoint_id} {method} {path}")
        out = handler(dict(path_parts or {}), params, body)
        return ObjectApiResponse(body=out, meta=_meta(200))

    def of(self, endpoint: str) -> list[Call]:
        return [c for c in self.calls if c.endpoint == endpoint]

    def _index(self, name: str) -> dict[str, Any]:
        if name in self.aliases and self.aliases[name]:
            (name,) = self.aliases[name]
        if name not in self.indices:
            raise _err(NotFoundError, 404, f"no such index [{name}]")
        return self.indices[name]

    # ------------------------------------------------------------ cluster
    def h_license_get(self, parts, params, body):
        return {"license": {"type": self.license_type, "status": "active", "uid": "x"}}

    def h_indices_get(self, parts, params, body):
        pat = parts["index"]
        return {n: {"aliases": {}, "mappings": i["mappings"], "settings": i["settings"]}
                for n, i in self.indices.items() if fnmatch.fnmatch(n, pat)}

    def h_indices_get_alias(self, parts, params, body):
        name = parts["name"]
        held = self.aliases.get(name)
        if not held:
            raise _err(NotFoundError, 404, f"alias [{name}] missing")
        return {i: {"aliases": {name: {}}} for i in held}

    def h_indices_create(self, parts, params, body):
        name = parts["index"]
        if name in self.indices:
            raise _err(BadRequestError, 400, f"resource_already_exists_exception [{name}]")
        props = body["mappings"].get("properties", {})
        if any(p.get("type") == "rank_vectors" for p in props.values()) and self.license_type == "basic":
            raise _err(ApiError, 403, "current license is non-compliant for [rank-vectors]")
        self.indices[name] = {"mappings": json.loads(json.dumps(body["mappings"])),
                              "settings": json.loads(json.dumps(body.get("settings", {}))), "docs": {}, "meta": {}}
        return {"acknowledged": True, "index": name}

    def h_indices_delete(self, parts, params, body):
        for name in parts["index"].split(","):
            if name not in self.indices:
                if params.get("ignore_unavailable") in (True, "true"):
                    continue
                raise _err(NotFoundError, 404, f"no such index [{name}]")
            del self.indices[name]
            for held in self.aliases.values():
                held.discard(name)
        return {"acknowledged": True}

    def h_indices_put_settings(self, parts, params, body):
        self._index(parts["index"])["settings"].setdefault("updates", []).append(body)
        return {"acknowledged": True}

    def h_indices_refresh(self, parts, params, body):
        return {"_shards": {"failed": 0}}

    def h_indices_put_mapping(self, parts, params, body):
        idx = self._index(parts["index"])
        if "_meta" in body:
            idx["mappings"]["_meta"] = json.loads(json.dumps(body["_meta"]))
        return {"acknowledged": True}

    def h_indices_get_mapping(self, parts, params, body):
        name = parts["index"]
        return {name: {"mappings": self._index(name)["mappings"]}}

    def h_indices_stats(self, parts, params, body):
        name = parts["index"]
        size = len(json.dumps(self._index(name)["docs"]))
        return {"indices": {name: {"primaries": {"store": {"size_in_bytes": size}}}}}

    def h_indices_update_aliases(self, parts, params, body):
        new = {a: set(s) for a, s in self.aliases.items()}
        for action in body["actions"]:
            (kind, spec), = action.items()
            if spec["index"] not in self.indices:
                raise _err(NotFoundError, 404, f"no such index [{spec['index']}]")
            if kind == "add":
                new.setdefault(spec["alias"], set()).add(spec["index"])
            elif kind == "remove":
                if spec.get("must_exist") and spec["index"] not in new.get(spec["alias"], set()):
                    # must_exist: the whole request fails and nothing is applied (notes/elasticsearch-fidelity.md §5)
                    raise _err(NotFoundError, 404, f"aliases [{spec['alias']}] missing")
                new.get(spec["alias"], set()).discard(spec["index"])
            else:
                raise AssertionError(kind)
        self.aliases = new
        return {"acknowledged": True}

    # ------------------------------------------------------------ documents
    def h_index(self, parts, params, body):
        name, doc_id = parts["index"], parts["id"]
        idx = self.indices.setdefault(name, {"mappings": {}, "settings": {}, "docs": {}, "meta": {}})
        if params.get("op_type") == "create" and doc_id in idx["docs"]:
            raise _err(ConflictError, 409, f"[{doc_id}]: version conflict, document already exists")
        if "if_seq_no" in params and (doc_id not in idx["docs"] or int(params["if_seq_no"]) != idx["meta"][doc_id]):
            raise _err(ConflictError, 409, f"[{doc_id}]: version conflict, required seqNo [{params['if_seq_no']}]")
        self.seq += 1
        idx["docs"][doc_id] = body
        idx["meta"][doc_id] = self.seq
        return {"_index": name, "_id": doc_id, "_seq_no": self.seq, "_primary_term": 1, "result": "created"}

    def h_get(self, parts, params, body):
        idx = self.indices.get(parts["index"])
        if idx is None or parts["id"] not in idx["docs"]:
            raise _err(NotFoundError, 404, "not found")
        return {"_id": parts["id"], "found": True, "_source": idx["docs"][parts["id"]],
                "_seq_no": idx["meta"][parts["id"]], "_primary_term": 1}

    def h_delete(self, parts, params, body):
        idx = self.indices.get(parts["index"])
        if idx is None or parts["id"] not in idx["docs"]:
            raise _err(NotFoundError, 404, "not found")
        if "if_seq_no" in params and int(params["if_seq_no"]) != idx["meta"][parts["id"]]:
            raise _err(ConflictError, 409, "version conflict")
        del idx["docs"][parts["id"]]
        return {"result": "deleted"}

    def _check_doc(self, idx: dict[str, Any], src: dict[str, Any]) -> None:
        props = idx["mappings"]["properties"]
        unknown = set(src) - set(props)
        if unknown:
            raise _err(BadRequestError, 400, f"strict_dynamic_mapping_exception {unknown}")
        rv = props["vectors"]
        for row in src["vectors"]:
            n = len(row) * 4 if rv["element_type"] == "bit" else len(row)
            if n != rv["dims"]:
                raise _err(BadRequestError, 400, f"vector has {n} dims, mapping has {rv['dims']}")
        if len(src["mean_vector"]) != props["mean_vector"]["dims"]:
            raise _err(BadRequestError, 400, "mean_vector dims")

    def h_bulk(self, parts, params, body):
        items = []
        for head, src in zip(body[0::2], body[1::2], strict=True):
            (op, meta), = head.items()
            idx = self._index(meta["_index"])
            if op == "create" and meta["_id"] in idx["docs"]:
                items.append({op: {"_id": meta["_id"], "status": 409, "error": {"type": "version_conflict"}}})
                continue
            self._check_doc(idx, src)
            idx["docs"][meta["_id"]] = src
            items.append({op: {"_index": meta["_index"], "_id": meta["_id"], "status": 201}})
        return {"took": 1, "errors": any("error" in next(iter(i.values())) for i in items), "items": items}

    def h_count(self, parts, params, body):
        return {"count": len(self._index(parts["index"])["docs"])}

    def h_reindex(self, parts, params, body):
        src = self._index(body["source"]["index"])
        dst = self._index(body["dest"]["index"])
        ids = body["source"]["query"]["ids"]["values"]
        created = 0
        for i in ids:
            if i in src["docs"]:
                dst["docs"][i] = json.loads(json.dumps(src["docs"][i]))
                created += 1
        return {"created": created, "failures": [], "total": created}

    # ------------------------------------------------------------ search
    @staticmethod
    def _doc_vectors(idx: dict[str, Any], src: dict[str, Any]) -> tuple[np.ndarray, bool]:
        if idx["mappings"]["properties"]["vectors"]["element_type"] == "bit":
            rows = [np.unpackbits(np.frombuffer(bytes.fromhex(h), dtype=np.uint8)) for h in src["vectors"]]
            return np.stack(rows).astype(np.float64), True
        return np.asarray(src["vectors"], dtype=np.float64), False

    def _script(self, idx, src, script) -> float:
        m = re.fullmatch(r"(maxSimDotProduct|maxSimInvHamming)\(params\.query_vector, 'vectors'\)"
                         r"( \+ params\.offset)?", script["source"])
        assert m, script["source"]
        d, bits = self._doc_vectors(idx, src)
        qv = script["params"]["query_vector"]
        if m.group(1) == "maxSimInvHamming":
            assert bits
            q = np.stack([np.unpackbits(np.frombuffer(bytes.fromhex(h), dtype=np.uint8)) for h in qv]).astype(float)
            ham = (q[:, None, :] != d[None, :, :]).sum(-1)
            s = float((1 - ham.min(1) / d.shape[1]).sum())
        else:
            q = np.asarray(qv, dtype=np.float64)
            s = float((q @ d.T).max(axis=1).sum())          # bit docs: q . b with b in {0, 1}
        if m.group(2):
            s += script["params"]["offset"]
        if s < 0:
            raise _err(BadRequestError, 400, "script score function must not produce negative scores")
        return s

    def _query_scores(self, idx, query) -> dict[str, float]:
        docs = idx["docs"]
        if "match_all" in query:
            return dict.fromkeys(docs, 1.0)
        if "ids" in query:
            return {i: 1.0 for i in query["ids"]["values"] if i in docs}
        if "script_score" in query:
            inner = self._query_scores(idx, query["script_score"]["query"])
            return {i: self._script(idx, docs[i], query["script_score"]["script"]) for i in inner}
        raise AssertionError(query)

    def _knn(self, idx, knn) -> dict[str, float]:
        q = np.asarray(knn["query_vector"], dtype=np.float64)
        sims = {}
        for i, src in idx["docs"].items():
            v = np.asarray(src["mean_vector"], dtype=np.float64)
            sims[i] = (1 + float(q @ v / (np.linalg.norm(q) * np.linalg.norm(v)))) / 2
        top = sorted(sims.items(), key=lambda kv: -kv[1])[: knn["k"]]
        return dict(top)

    def _search(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        idx = self._index(name)
        if "retriever" in body:
            r = body["retriever"]["rescorer"]
            first = self._knn(idx, r["retriever"]["knn"])
            resc = r["rescore"]
            window = sorted(first.items(), key=lambda kv: -kv[1])[: resc["window_size"]]
            rq = resc["query"]
            scores = {}
            for i, s0 in window:
                s = self._script(idx, idx["docs"][i], rq["rescore_query"]["script_score"]["script"])
                scores[i] = rq.get("query_weight", 1.0) * s0 + rq.get("rescore_query_weight", 1.0) * s
        else:
            scores = self._query_scores(idx, body.get("query", {"match_all": {}}))
        order = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        size = body.get("size", 10)
        hits = [{"_index": name, "_id": i, "_score": s,
                 **({"_source": idx["docs"][i]} if body.get("_source", True) is not False else {})}
                for i, s in order[:size]]
        out: dict[str, Any] = {"_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                               "hits": {"total": {"value": len(scores)}, "hits": hits}}
        if "aggs" in body:
            field_ = body["aggs"]["n"]["sum"]["field"]
            out["aggregations"] = {"n": {"value": float(sum(idx["docs"][i][field_] for i in scores))}}
        return out

    def h_search(self, parts, params, body):
        body = dict(body or {})
        if "_source_includes" in params:
            body["_source"] = True
        out = self._search(parts["index"], body)
        if "scroll" in params:
            out["_scroll_id"] = "scroll-1"
        return out

    def h_scroll(self, parts, params, body):
        return {"_scroll_id": "scroll-1", "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                "hits": {"hits": []}}

    def h_clear_scroll(self, parts, params, body):
        return {"succeeded": True}

    def h_msearch(self, parts, params, body):
        responses = []
        for head, b in zip(body[0::2], body[1::2], strict=True):
            try:
                responses.append(self._search(head["index"], b))
            except ApiError as exc:
                responses.append({"error": exc.body["error"], "status": exc.meta.status})
        return {"responses": responses}
