"""The pseudo-CoT system: a base, a Tiny Thought Model and a policy (the router by default).

:class:`PseudoCoT` holds the models and the settings that stay the same from call to call; each call
(:meth:`PseudoCoT.run`, :meth:`PseudoCoT.thought_first`) goes through :mod:`pseudocot.infer.loop`
with its own state. A system directory (written by ``pseudocot router``) holds ``system.json``
naming the base, the TTM, the protocol and the decoding presets, and the router's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pseudocot.config import GenerationPreset, ProtocolConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.infer import loop
from pseudocot.infer.loop import Call, OnState, OnStep, Result
from pseudocot.infer.prefix_cache import ConversationCache
from pseudocot.infer.router import Policy, Router, make_policy
from pseudocot.models import check_same_tokenizer, load_model, load_tokenizer, pad_id
from pseudocot.records import Record
from pseudocot.stage import file_error, read_json

SYSTEM_FILE = "system.json"
KV_CACHE_BYTES = 8 * 2**30  # the loop's key/value budget on the CPU
ANSWER_MODES = ("score", "generate")


def read_system(system_dir: Path) -> dict[str, Any]:
    """A system directory's ``system.json``, its protocol and presets parsed into their config types.

    Raises:
        PseudoCoTError: the directory is not a system, or ``system.json`` is damaged (not JSON, a key
            missing, a setting out of range), named with the command that rewrites it.
    """
    path = Path(system_dir) / SYSTEM_FILE
    if not path.is_file():
        raise PseudoCoTError(f"{system_dir} is not a pseudo-CoT system ({SYSTEM_FILE} missing); run the router stage.")
    spec = read_json(path, ("base", "ttm", "max_thoughts", "protocol", "base_preset", "ttm_preset"))
    try:
        parsed = {"protocol": ProtocolConfig(**spec["protocol"])}
        parsed |= {k: GenerationPreset(**spec[k]) for k in ("base_preset", "ttm_preset")}
    except (TypeError, ValueError):  # pydantic's ValidationError is a ValueError
        raise file_error(path, "is damaged (its protocol or presets do not validate)") from None
    # Systems written before the answer mode was kept scored options.
    parsed["answer_mode"] = spec.get("answer_mode", "score")
    if parsed["answer_mode"] not in ANSWER_MODES:
        raise file_error(path, f"is damaged (answer_mode {parsed['answer_mode']!r} is neither score nor generate)")
    return spec | parsed


class PseudoCoT:
    """A base, a Tiny Thought Model and a policy (the router by default), joined by the loop.

    Args:
        max_thoughts: most thoughts per question, unless a call asks for fewer.
        base_preset: decoding of the base's written answers (free text, or ``answer_mode: generate``).
        ttm_preset: decoding of the TTM's thoughts.
        batch_size: questions per forward pass or generation batch.
        kv_cache: keep the base's key/value cache per question from round to round.
        kv_cache_bytes: most bytes those caches may hold at once (the loop runs fewer questions at a time
            to stay within it); default: half the GPU memory free when a call starts, or
            :data:`KV_CACHE_BYTES` on the CPU.
        answer_mode: ``score`` (options scored by likelihood) or ``generate`` (the base writes its
            answer to a multiple-choice question, and the option is read off it).
    """

    def __init__(
        self,
        base: PreTrainedModel,
        ttm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        protocol: ProtocolConfig,
        router: Router | None = None,
        max_thoughts: int = 2,
        base_preset: GenerationPreset | None = None,
        ttm_preset: GenerationPreset | None = None,
        batch_size: int = 32,
        kv_cache: bool = True,
        answer_mode: str = "score",
        kv_cache_bytes: int | None = None,
    ) -> None:
        if answer_mode not in ANSWER_MODES:
            raise ValueError(f"answer_mode must be 'score' or 'generate', not {answer_mode!r}")
        self.base, self.ttm, self.tokenizer = base.eval(), ttm.eval(), tokenizer
        self.protocol = protocol
        self.router = router
        self.max_thoughts = max_thoughts
        self.base_preset = base_preset or GenerationPreset(max_new_tokens=32)
        self.ttm_preset = ttm_preset or GenerationPreset(max_new_tokens=128)
        self.batch_size = batch_size
        self.kv_cache = kv_cache
        self.kv_cache_bytes = kv_cache_bytes
        self.answer_mode = answer_mode
        self.parameters = {"base": base.num_parameters(), "ttm": ttm.num_parameters()}

    @classmethod
    def load(cls, system_dir: str | Path, base: str | None = None, **overrides: Any) -> PseudoCoT:
        """The system a ``pseudocot router`` run wrote (``system.json`` and the router's weights).

        Args:
            base: a model (directory or hub id) to use in place of the system's base, e.g. the base
                before its fine-tune; it must share the TTM's tokenizer.
            overrides: settings in place of the system's (``base_preset``, ``batch_size``...).
        """
        system_dir = Path(system_dir)
        spec = read_system(system_dir)

        def resolve(ref: str) -> str:
            path = system_dir / ref
            return str(path.resolve()) if path.exists() else ref

        base_ref, ttm_ref = base or resolve(spec["base"]), resolve(spec["ttm"])
        tokenizer = load_tokenizer(base_ref)
        check_same_tokenizer(load_tokenizer(ttm_ref), tokenizer, f"the TTM {ttm_ref}", f"the base {base_ref}")
        kwargs: dict[str, Any] = {
            "router": Router.load(system_dir),
            "max_thoughts": spec["max_thoughts"],
            "base_preset": spec["base_preset"],
            "ttm_preset": spec["ttm_preset"],
            "answer_mode": spec["answer_mode"],
        }
        return cls(load_model(base_ref), load_model(ttm_ref), tokenizer, spec["protocol"], **kwargs | overrides)

    def kv_budget(self) -> int:
        """Bytes the loop's per-question key/value caches may hold at once (see ``kv_cache_bytes``)."""
        if self.kv_cache_bytes is not None:
            return self.kv_cache_bytes
        if self.base.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.base.device)
            return free // 2
        return KV_CACHE_BYTES

    def regime_note(self) -> str | None:
        """Where this system answers otherwise than its router was trained and calibrated (another answer
        mode, or written answers decoded with another preset): a sentence saying so; else ``None``."""
        if self.router is None:
            return None
        # Routers written before the regime was kept were rolled out with options scored.
        calibrated = self.router.meta.get("calibration", {"answer_mode": "score"})
        if calibrated["answer_mode"] != self.answer_mode:
            return (
                f"the router was trained on answers given with {calibrated['answer_mode']} mode, "
                f"and is used here with {self.answer_mode} mode"
            )
        preset = self.base_preset.model_dump(mode="json")
        if self.answer_mode == "generate" and calibrated.get("base_preset") != preset:
            return (
                f"the router was trained on answers decoded with {calibrated.get('base_preset')}, "
                f"and is used here with {preset}"
            )
        return None

    def run(
        self,
        records: Sequence[Record],
        policy: Policy | str | None = None,
        max_thoughts: int | None = None,
        on_step: OnStep | None = None,
        on_state: OnState | None = None,
        history: Sequence[tuple[str, str]] = (),
        cancelled: Callable[[int], bool] | None = None,
        base_preset: GenerationPreset | None = None,
    ) -> list[Result]:
        """The pseudo-CoT loop on ``records``; ``policy`` defaults to the system's router.

        Args:
            policy: a :class:`Policy` or its name (``router``, ``never``, ``always``, ``random:R``,
                ``entropy:H``).
            max_thoughts: most thoughts per question (default: the system's).
            on_step: called as ``on_step(index, kind, text)`` with kind ``answer`` or ``thought``
                as each is produced (for chat and streaming).
            on_state: called as ``on_state(indices, state)`` with the features of each round's
                answers (router training collects them).
            history: earlier ``(question, answer)`` exchanges of a chat session, shown to the base
                before each question.
            cancelled: ``cancelled(index)`` is checked before each round and after every generated
                token; a question it is true for leaves the loop (a client that went away), its
                result as far as it got.
            base_preset: decoding of the base's written answers for this call (default: the system's).
        """
        if policy is None or isinstance(policy, str):
            policy = make_policy(policy or ("router" if self.router else "never"), self.router)
        limit = self.max_thoughts if max_thoughts is None else max_thoughts
        call = self._call(records, history, cancelled, base_preset)
        return loop.run(self, call, policy, limit, on_step, on_state)

    def thought_first(self, records: Sequence[Record]) -> list[Result]:
        """The section-2 variant: the TTM writes its reasoning, then the base answers once."""
        return loop.thought_first(self, self._call(records))

    def _call(
        self,
        records: Sequence[Record],
        history: Sequence[tuple[str, str]] = (),
        cancelled: Callable[[int], bool] | None = None,
        base_preset: GenerationPreset | None = None,
    ) -> Call:
        """A new call's state: the system's settings where the call sets none."""
        cache = ConversationCache(self.base, pad_id(self.tokenizer)) if self.kv_cache else None
        return Call(records, base_preset or self.base_preset, history, cancelled, cache)
