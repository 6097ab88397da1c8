"""A stage's peak memory, estimated from its models' configs before it runs (printed on a GPU).

The arithmetic, in bytes, for a Llama-style decoder of ``L`` layers, width ``h``, MLP width ``I`` and
vocabulary ``V``, over ``T`` tokens (batch x sequence):

* **weights**: parameters x bytes per weight; in 4-bit NF4 (QLoRA) the layers' projections take half a
  byte, plus their block scales (:data:`NF4_BYTES`), and the embeddings and head stay 16-bit;
* **trainable weights**: a gradient of the weight's own size and AdamW's two float32 moments (8 bytes);
  a LoRA adapter of rank ``r`` on a projection of shape (in, out) has ``r x (in + out)`` float32 weights;
* **activations** kept for the backward pass: ``8h + 4I`` values per token and layer (the two norms' inputs
  and outputs, q, k, v, the attention output; the MLP's gate, up, activation and product), or, with
  gradient checkpointing, each layer's input ``h`` and one layer's whole activations;
* **logits**: ``T x V`` in float32 and their gradient (a distillation's teacher log-probabilities too);
* **key/value cache**: ``2 x L x kv_heads x head_dim`` values per token.

Attention scores are not counted (SDPA's kernels do not keep them), nor the allocator's caching and
fragmentation; ``benchmarks/stage_memory.py`` measures the real peak beside this estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FP32 = 4  # bytes
GIB = 2**30
LOOP_BATCHES = 4  # batches of questions the pseudo-CoT loop runs at once, their caches held (at most)
# NF4 with double quantization: 4 bits a weight, an 8-bit scale per block of 64 and a float32 scale per 256 of those.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)


@dataclass(frozen=True)
class Shape:
    """What the estimate reads off a causal LM's config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool  # the head shares the embedding's weights

    @classmethod
    def of(cls, config: Any) -> Shape:
        """The shape of a ``PretrainedConfig`` (its text config, for a multimodal one)."""
        c = config.get_text_config()
        heads = c.num_attention_heads
        return cls(
            layers=c.num_hidden_layers,
            hidden=c.hidden_size,
            intermediate=getattr(c, "intermediate_size", None) or 4 * c.hidden_size,
            heads=heads,
            kv_heads=getattr(c, "num_key_value_heads", None) or heads,
            head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
            vocab=c.vocab_size,
            tied=bool(getattr(c, "tie_word_embeddings", False)),
        )

    def projections(self) -> dict[str, tuple[int, int]]:
        """Each layer's linear weights: name -> (in, out)."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear(self) -> int:
        """Parameters of the layers' projections."""
        return self.layers * sum(a * b for a, b in self.projections().values())

    @property
    def parameters(self) -> int:
        """Every parameter: projections, embeddings (and an untied head), the RMS norms (two a layer, one last)."""
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.linear + embeddings + (2 * self.layers + 1) * self.hidden

    def weight_bytes(self, dtype_bytes: int, four_bit: bool = False) -> float:
        """The weights' bytes, in ``dtype_bytes`` a weight or in 4-bit NF4 (projections only)."""
        if four_bit:
            return self.linear * NF4_BYTES + (self.parameters - self.linear) * 2
        return float(self.parameters * dtype_bytes)

    def trainable(self, method: str, targets: tuple[str, ...] = (), rank: int = 0) -> int:
        """Parameters trained: all (``full``), q and k (``qk_full``), else LoRA of ``rank`` on the ``targets``."""
        if method == "full":
            return self.parameters
        shapes = self.projections()
        if method == "qk_full":
            return self.layers * sum(a * b for name, (a, b) in shapes.items() if name in ("q_proj", "k_proj"))
        return self.layers * sum(rank * (a + b) for name, (a, b) in shapes.items() if name in targets)

    def kv_bytes(self, tokens: int, dtype_bytes: int) -> int:
        """The key/value cache of ``tokens`` tokens."""
        return 2 * self.layers * self.kv_heads * self.head_dim * tokens * dtype_bytes


@dataclass
class Estimate:
    """A stage's estimated peak: what holds memory -> bytes."""

    parts: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        """``about 18.4 GiB at peak (weights 15.0, optimizer 0.3, ...)``."""
        parts = ", ".join(f"{name} {size / GIB:.2f}" for name, size in self.parts.items() if size)
        return f"about {self.total / GIB:.2f} GiB at peak ({parts} GiB)"


def training(
    model: Shape,
    tokens: int,
    weights: float,
    trainable: int,
    adapter: bool,
    dtype_bytes: int,
    checkpointing: bool = False,
    teacher_weights: float = 0.0,
) -> Estimate:
    """One training step's peak over ``tokens`` tokens (batch x sequence).

    Args:
        weights: the model's weight bytes (:meth:`Shape.weight_bytes`).
        trainable: parameters trained; ``adapter``: they are a LoRA adapter's float32 weights beside the
            model's (else the model's own, in ``dtype_bytes``).
        dtype_bytes: bytes of an activation (and of a full fine-tune's gradient).
        teacher_weights: a distillation's teacher weight bytes (0: no teacher); its log-probabilities
            over the vocabulary count with the logits.
    """
    h, layers = model.hidden, model.layers
    layer = (8 * h + 4 * model.intermediate) * tokens * dtype_bytes  # one layer's kept activations
    activations = layers * h * tokens * dtype_bytes + layer if checkpointing else layers * layer
    logits = (3 if teacher_weights else 2) * tokens * model.vocab * FP32
    parts = {
        "weights": weights + (trainable * FP32 if adapter else 0) + teacher_weights,
        "gradients": trainable * (FP32 if adapter else dtype_bytes),
        "optimizer": 2 * FP32 * trainable,
        "activations": activations,
        "logits": logits,
    }
    return Estimate({k: float(v) for k, v in parts.items()})


def inference(models: list[tuple[Shape, float]], rows: int, context: int, dtype_bytes: int) -> Estimate:
    """Generation with ``models`` (each shape with its weight bytes) loaded together: ``rows`` sequences
    (a batch's prompts x beams, and the questions whose caches the loop holds) of ``context`` tokens in the
    largest one's key/value cache, and their last-position logits."""
    widest = max(models, key=lambda m: m[0].kv_bytes(1, dtype_bytes))[0]
    return Estimate(
        {
            "weights": sum(w for _, w in models),
            "key/value cache": float(widest.kv_bytes(rows * context, dtype_bytes)),
            "logits": float(rows * max(s.vocab for s, _ in models) * FP32),
        }
    )


def memory_line(label: str, estimate: Estimate, device: str, capacity: int) -> str:
    """What is printed before a stage on a GPU: its estimate, against the device's memory."""
    line = f"{label}: memory estimate {estimate.describe()}, of {capacity / GIB:.1f} GiB on {device}"
    if estimate.total > capacity:
        line += (
            "; [yellow]more than the GPU holds: lower the batch size or the sequence length, or turn on "
            "gradient_checkpointing or load_in_4bit[/]"
        )
    return line
