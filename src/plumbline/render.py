"""Fresh renders of the template: Copier's `run_copy` with a project's recorded answers.

A render is a dict of relative path -> bytes. Renders are cached per (template tree, answers):
a fleet generated with the same answers at the same release renders once. Renders run in a
process pool (Copier is pure Python; threads would share one core).
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import tempfile
import threading
import warnings
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

Tree = dict[str, bytes]

_memo_installed = False


def install_compile_memo() -> None:
    """Reuse Jinja's compiled code across renders of the same template tree in this process.

    Copier builds a new Jinja environment for every render, so every file is parsed and
    compiled again: about half of a render's time. The code Jinja generates depends only on the
    source, the environment's settings and its extensions, all in the key below, and on the
    template tree (constant folding may call its filters): the loader's search path is in the
    key too, and every template commit is exported to its own folder.
    """
    global _memo_installed
    if _memo_installed:
        return
    import jinja2

    original = jinja2.Environment.compile
    memo: dict[tuple[Any, ...], Any] = {}

    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):  # type: ignore[no-untyped-def]
        if not isinstance(source, str) or self.finalize is not None or callable(self.autoescape):
            return original(self, source, name, filename, raw, defer_init)
        key = (
            type(self),
            source,
            name,
            filename,
            raw,
            defer_init,
            tuple(sorted(self.extensions)),
            self.block_start_string,
            self.block_end_string,
            self.variable_start_string,
            self.variable_end_string,
            self.comment_start_string,
            self.comment_end_string,
            self.line_statement_prefix,
            self.line_comment_prefix,
            self.trim_blocks,
            self.lstrip_blocks,
            self.newline_sequence,
            self.keep_trailing_newline,
            self.optimized,
            self.autoescape,
            self.is_async,
            repr(getattr(self.loader, "searchpath", None)),
        )
        if key not in memo:
            memo[key] = original(self, source, name, filename, raw, defer_init)
        return memo[key]

    jinja2.Environment.compile = compile  # type: ignore[method-assign]

    # Copier runs `git` once per rendered file to carry the executable bit into the
    # destination's git index; a render lands in a fresh temporary folder, outside any
    # repository, where Copier documents that call as a no-op: skip the processes.
    from copier import _main

    if hasattr(_main.Worker, "_sync_git_index_executable_bit"):
        _main.Worker._sync_git_index_executable_bit = lambda self, dst_relpath, src_mode: None  # type: ignore[method-assign]

    # copier.yml is parsed again for every render; an exported tree never changes, so parse
    # each once (a deep copy each time: Copier may change what it gets).
    from copier import _template

    if hasattr(_template, "load_template_config"):
        load = _template.load_template_config
        configs: dict[tuple[str, bool], Any] = {}

        def load_template_config(conf_path, quiet=False):  # type: ignore[no-untyped-def]
            key = (str(Path(conf_path).resolve()), quiet)
            if key not in configs:
                configs[key] = load(conf_path, quiet)
            return copy.deepcopy(configs[key])

        _template.load_template_config = load_template_config
    _memo_installed = True


def render_tree(template_dir: str, answers: dict[str, Any]) -> Tree:
    """Render the exported template tree with these answers; every file's bytes by path."""
    from copier import run_copy

    install_compile_memo()
    # a render is written and removed at once: in memory when the machine has a tmpfs
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="plumbline-render-", dir=shm) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dst = Path(tmp) / "project"
        run_copy(template_dir, str(dst), data=answers, defaults=True, unsafe=True, quiet=True, overwrite=True)
        return {
            path.relative_to(dst).as_posix(): path.read_bytes()
            for path in sorted(dst.rglob("*"))
            if path.is_file() and not path.is_symlink()
        }


def answers_key(answers: dict[str, Any]) -> str:
    return json.dumps(answers, sort_keys=True, default=str)


class Renderer:
    """Deduplicated, cached renders; `submit` returns a future shared by identical requests."""

    def __init__(self, jobs: int) -> None:
        self._pool: Executor | None = None
        self._jobs = jobs
        self._futures: dict[tuple[str, str], Future[Tree]] = {}
        self._lock = threading.Lock()

    def submit(self, template_dir: Path, answers: dict[str, Any]) -> Future[Tree]:
        key = (str(template_dir), answers_key(answers))
        with self._lock:
            return self._submit(key, template_dir, answers)

    def _submit(self, key: tuple[str, str], template_dir: Path, answers: dict[str, Any]) -> Future[Tree]:
        if key not in self._futures:
            if self._jobs <= 1:
                future: Future[Tree] = Future()
                try:
                    future.set_result(render_tree(str(template_dir), answers))
                except Exception as exc:  # the caller reads it from the future, as from the pool
                    future.set_exception(exc)
                self._futures[key] = future
                return future
            if self._pool is None:
                # spawn: the caller runs clone threads, and forking a threaded process is unsafe; the
                # workers are this process's children, so their CPU time counts in its own
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=self._jobs, mp_context=context)
            self._futures[key] = self._pool.submit(render_tree, str(template_dir), answers)
        return self._futures[key]

    @property
    def renders(self) -> int:
        return len(self._futures)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
