"""Every run's settings as dataclasses, with the help text of each field in its metadata.

The CLI builds its options from these fields (``siftlm.options``), and ``--config`` YAML files and the Python
API fill the same classes, so a setting is named, defaulted and explained in one place. ``from_dict`` turns
a plain mapping into a config and rejects unknown keys, naming the closest known one.
"""

from __future__ import annotations

import difflib
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass

from siftlm.errors import DataError, UsageError


def opt(default=MISSING, help: str = "", *, cli: str | None = None, aliases: tuple[str, ...] = (),
        hidden: bool = False, argument: bool = False, factory=None, nested=None):
    """A config field: ``default``, its ``help``, and optionally its CLI name (default: the field name with
    dashes), extra CLI spellings (``aliases``), ``argument=True`` for a positional CLI argument or
    ``hidden=True`` for settings that are not CLI options; ``nested``: the config class of an optional nested
    config (default None), filled by ``from_dict`` from a mapping."""
    meta = {"help": help, "cli": cli, "aliases": tuple(aliases), "hidden": hidden, "argument": argument,
            "nested": nested}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def closest(name: str, known) -> str:
    """' (did you mean X?)' for the closest of ``known`` to ``name``, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def parse_number(text: str) -> int | float:
    """'10' -> 10 (a count), '0.1' / '1.0' / '1e-1' -> a float (a fraction): how a budget is written decides."""
    text = str(text).strip()
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"not a number: {text!r}") from None


def from_dict(cls, values: dict, *, where: str = ""):
    """``cls(**values)`` for a config dataclass, recursing into nested configs; an unknown key is a
    ValueError naming it, where it was found and the closest known key."""
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in (values or {}).items():
        if key not in known:
            raise DataError(f"{where or cls.__name__}: unknown key {key!r}{closest(key, known)}; "
                             f"known: {', '.join(known)}")
        sub = known[key].default_factory
        sub = sub if is_dataclass(sub) else known[key].metadata.get("nested")
        if is_dataclass(sub) and isinstance(value, dict):
            value = from_dict(sub, value, where=f"{where or cls.__name__}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


@dataclass
class DataConfig:
    format: str | None = opt(None, "override format detection: alpaca | sharegpt | messages | prompt_completion | "
                                   "preference | text")
    split: str | None = opt(None, "the split of a DatasetDict (a save_to_disk folder or --dataset-name); needed when "
                                  "it has several")
    columns: str | None = opt(None, "rename keys before reading, e.g. prompt=question,response=answer (also a mapping "
                                    "in YAML)")
    dataset_name: str | None = opt(None, "a Hugging Face hub dataset to read instead of DATA (when online)")
    subset: str | None = opt(None, "the hub dataset's configuration (subset) name")


COMPILE_HELP = ("compile the decoder's forward (torch.compile) for the loss, uncond, lm-embed and pairs passes: auto "
                "(on when a compiler is present and the pass has at least 1M tokens on a CPU, 5M on a GPU, where the ~1 "
                "min of compiling pays) | on | off (eager); a failure falls back to eager with one line; same results "
                "as eager to ~1e-6")
BACKEND_HELP = ("where model passes, DPP parts and k-means assignment run: local (this process) | ray (a Ray cluster; "
                "pip install 'siftlm[ray]')")
RAY_ADDRESS_HELP = "--backend ray: the cluster to join (default: RAY_ADDRESS, else a new local cluster)"


@dataclass
class SignalConfig:
    store: str = opt("siftlm-store", "signal store folder (cached, resumable model passes)")
    max_length: int = opt(1024, "max tokens per example; the prompt is cut from the left first, else the example is "
                                "rejected")
    template: str = opt("auto", "auto (the tokenizer's chat template when it has one; none for plain text records) | "
                                "chat | alpaca | plain (no template)")
    loss_on: str = opt("auto", "which tokens are scored: auto (the completion for prompt/completion data, as TRL trains "
                               "it; every assistant turn otherwise, the papers' L(y|x)) | assistant | completion | all "
                               "(every token: TRL's default for messages data)")
    token_budget: int = opt(4096, "padded tokens per forward batch")
    shard_size: int | None = opt(None, "examples per stored shard, the unit of resume (default: shards of about "
                                       "--shard-tokens tokens each)")
    shard_tokens: int = opt(32768, "tokens per stored shard when --shard-size is not given (about a minute of a "
                                   "135M model's forward on 2 CPU cores)")
    limit: int | None = opt(None, "use only the first N valid examples")
    dtype: str = opt("auto", "compute precision: auto (bfloat16 on GPUs that support it, CPUs with AMX, and CPUs where a "
                             "timed bf16 matmul is 1.5x faster, else float32) "
                             "| float32 | bfloat16; softmax statistics, losses and optimizer master weights stay fp32")
    compile: str = opt("auto", COMPILE_HELP)
    backend: str = opt("local", BACKEND_HELP)
    ray_address: str | None = opt(None, RAY_ADDRESS_HELP)
    ray_actors: int | None = opt(None, "--backend ray: model replicas (default: one per GPU of the cluster, else one "
                                       "per CPU)")
    lock_timeout: float | None = opt(None, "seconds a store shard locked by another process may stay locked before this "
                                           "process takes it over and computes it (a lock naming another host is never "
                                           "cleared otherwise: a node that died holds it for good); default: wait")
    progress: bool = opt(True, hidden=True)

    def identity(self) -> dict:
        """The settings that change a pass's numbers, as experiment cells and pool scores are keyed by them (the rest
        say where and how passes run)."""
        return {k: getattr(self, k) for k in ("max_length", "template", "loss_on", "dtype")}


@dataclass
class TrainConfig:
    epochs: int = opt(2, ">= 2 so LP(1) is informative", aliases=("num-train-epochs",))
    lr: float = opt(2e-4, "learning rate (LoRA; full fine-tuning usually wants ~1e-5)", aliases=("learning-rate",))
    token_budget: int = opt(2048, "padded tokens per optimizer step", cli="train-budget")
    lora_r: int = opt(8, "LoRA rank")
    lora_alpha: int = opt(16, "LoRA alpha")
    lora_dropout: float = opt(0.0, "LoRA dropout")
    target_modules: str = opt("all-linear", "LoRA target modules: all-linear or names, e.g. q_proj,v_proj")
    full: bool = opt(False, "full fine-tuning instead of LoRA")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    seed: int = opt(0, "seed of the LoRA initialisation and the batch order")
    gradient_checkpointing: bool = opt(False, "recompute the decoder's activations in the backward: less memory per "
                                              "token, more time (bench/memory.py measures both)",
                                       aliases=("activation-checkpointing",))
    workers: int = opt(1, "--backend ray: training processes (Ray Train workers, one GPU each when the cluster has "
                          "GPUs); under torchrun / accelerate launch the launcher decides")

    def identity(self) -> dict:
        """The settings that change the trained weights (not how memory is traded for time, nor how many processes
        share the work: every world size takes the same global batches)."""
        return {k: v for k, v in asdict(self).items() if k not in ("gradient_checkpointing", "workers")}


@dataclass
class GradConfig:
    rank: int = opt(8, "grads: LoRA rank r of the first (implicit) JL transform, A ~ N(0, 1/r)")
    dim: int | None = opt(None, "grads: sparse JL dimension D (default 8192 on a GPU, 1024 on CPU)")
    density: int = opt(4, "grads: nonzeros per input coordinate of the sparse JL")
    target_modules: str = opt("all-linear", "grads: all-linear (every linear layer of the decoder) or names, "
                                            "e.g. q_proj,v_proj")
    seed: int = opt(0, "seed of A and of the JL projection")
    normalize: bool = opt(True, "grads: L2-normalise the projected gradients (the paper's normalised gradients)")
    keep_layers: bool = opt(False, "grads: also keep every layer's gradient before projection, for DataInf (large: 4 "
                                   "bytes x sum of out_features x r per example, 5 MB for SmolLM2 at r = 8)")

    def resolved_dim(self, device) -> int:
        """D for a torch device: the given dim, else 8192 on a GPU and 1024 on CPU."""
        return self.dim or (8192 if device.type == "cuda" else 1024)


# siftlm's default selection, for run and select alike (docs/experiments.md): lowest lp_app, the best junk ranking of
# the noisy-pool benchmark, as a generous filter (a 10 % pick by it trained worse than random on clean data)
DEFAULT_BY = "lp_app"
DEFAULT_BUDGET = 0.5


@dataclass
class SelectConfig:
    scores: str = opt("", "scores.parquet from `siftlm score` (or any parquet with an id column); with --method filter and "
                          "no --data, the data file itself (no scores needed)", argument=True)
    data: str = opt("", "the dataset the scored ids come from (for selected.jsonl)")
    method: str = opt("topk", "topk | dpp | <score>+dpp (e.g. davir+dpp) | cluster | cluster-random | random | dedup | "
                              "s2l (loss-trajectory clusters) | less | repr | datainf (toward --target) | filter (drop "
                              "what the behaviour detectors flag: refusals, wrong language, repetition, empty, echo; "
                              "then random up to the budget)")
    by: str | None = opt(None, "score to rank by (topk, cluster; default lp_app), the DPP quality with --lam > 0, or "
                               "the order dedup walks in (default: input order)")
    budget: int | float | None = opt(None, "a fraction of the examples in (0, 1] (1.0 keeps all) or a count written "
                                           "as an integer (10); default 0.5, a generous filter (dedup: every "
                                           "non-duplicate)")
    budget_tokens: int | float | None = opt(None, "a token budget instead of a count: the selection's prompt + "
                                                  "response tokens at most this many (an integer) or this fraction of "
                                                  "all scored tokens (in (0, 1]); every method; needs the n_prompt / "
                                                  "n_response columns of siftlm score")
    budget_on: str = opt("all", "what --budget-tokens counts: all (prompt + response tokens) | response (the supervised "
                                "tokens a fine-tune learns from)")
    exclude: str | None = opt(None, "ids to leave out before the method runs (.parquet with an id column, .jsonl, or a "
                                    "text file of one id per line); a fractional budget stays a fraction of every "
                                    "scored row")
    language: str = opt("en", "filter: the language answers should be in (ISO 639-1), for the wrong-language detector")
    direction: str | None = opt(None, "high | low (default: the score's own)")
    features: str | None = opt(None, "dpp / cluster / dedup: .npy rows in scores order, or .parquet id + vector "
                                     "(from `siftlm signals --out`)")
    gamma: float = opt(1.0, "dpp: RBF kernel exp(-gamma ||x - y||^2)")
    lam: float | None = opt(None, "dpp: quality weight lambda in [0, 1) (default 0 for dpp: diversity only; 0.5 for "
                                  "<score>+dpp)")
    normalize: bool = opt(True, "dpp / dedup: L2-normalise the features first")
    standardize: bool = opt(False, "dpp: rescale the quality score to mean 0, std 1 before beta (ours; the paper uses "
                                   "the score as given)")
    dpp_dtype: str = opt("auto", "dpp: auto (float64 unless it would not fit in half the free memory) | float64 | "
                                 "float32")
    dpp_parts: int = opt(1, "dpp: split the items into this many random parts, run greedy in each, then greedy over "
                            "the union of their picks (GreeDi; parts run as Ray tasks with --backend ray); 1 = one "
                            "greedy over everything")
    clusters: int | None = opt(None, "cluster: k-means k (default N / 50)")
    kmeans: str = opt("sklearn", "cluster: k-means backend sklearn | faiss (trained on a sample of --kmeans-sample "
                                 "rows, every row assigned; assignment in Ray tasks with --backend ray)")
    kmeans_sample: int | None = opt(None, "cluster with faiss: rows to train k-means on (default all, at most "
                                          "256 per cluster, faiss's own cap)")
    backend: str = opt("local", BACKEND_HELP)
    ray_address: str | None = opt(None, RAY_ADDRESS_HELP)
    threshold: float = opt(0.95, "dedup: cosine similarity that counts as a duplicate")
    seed: int = opt(0, "seed of random, cluster-random and k-means")
    target: str | None = opt(None, "less / repr / datainf: the target set's features (.parquet from the same pass), "
                                   "its data file (the pass is run as the --features file was), or centroid (less / "
                                   "repr: the mean of the pool's own features, when there is no target set)")
    aggregate: str = opt("max", "less: cosine to the target set's max | mean")
    format: str | None = opt(None, "override format detection of --data")
    name: str = opt("", "mix: the source name written in every row", hidden=True)
    checkpoint: str | None = opt(None, "dpp: folder of resumable state (default OUT/dpp-checkpoint)", hidden=True)
    keep_checkpoint: bool = opt(False, "dpp: keep OUT/dpp-checkpoint after a finished run (a later run with a smaller "
                                       "budget then reuses its picks; it takes 8 x N x budget bytes)")


@dataclass
class DPOTrainConfig:
    loss: str = opt("davir", "davir (DavIR-DPO, eq. 4) | sigmoid | ipo | hinge | sigmoid_norm | sppo_hard | nca_pair | "
                             "bco_pair | apo_zero | apo_down")
    beta: float | None = opt(None, "default 0.1; for davir 0.1 x the median |log pi_ref(y|x)| of the data (see "
                                   "siftlm.train.dpo_losses.default_beta)")
    lr: float = opt(5e-5, "learning rate: a LoRA DPO rate, lower than SFT's 2e-4 because the preference loss's "
                          "gradients are larger (TRL's own 1e-6 default is for full fine-tuning)",
                    aliases=("learning-rate",))
    epochs: float = opt(1.0, "training epochs", aliases=("num-train-epochs",))
    max_steps: int = opt(-1, "> 0 overrides --epochs")
    batch_size: int = opt(4, "pairs per device step", aliases=("per-device-train-batch-size",))
    grad_accum: int = opt(1, "gradient accumulation steps", aliases=("gradient-accumulation-steps",))
    full: bool = opt(False, "full fine-tuning instead of LoRA")
    lora_r: int = opt(8, "LoRA rank")
    lora_alpha: int = opt(16, "LoRA alpha")
    target_modules: str = opt("all-linear", "LoRA target modules")
    save_steps: int = opt(50, "checkpoint interval; a rerun resumes from the newest checkpoint")
    activation_checkpointing: bool = opt(False, "activation checkpointing (less memory, ~30% slower)",
                                         cli="gradient-checkpointing")
    logging_steps: int = opt(1, hidden=True)
    seed: int = opt(0, "seed of the LoRA initialisation and the data order")


@dataclass
class RunConfig:
    data: str = opt("", "dataset: jsonl, json, parquet, csv or a datasets save_to_disk folder (or --dataset-name)",
                    argument="optional")
    model: str = opt("builtin:smollm2", "model folder, .gguf file, builtin:<name> or hub id")
    out: str = opt("siftlm-out", "output folder", aliases=("output-dir",))
    input: DataConfig = opt(factory=DataConfig)
    by: str = opt(DEFAULT_BY, "score to select by (default lp_app, keep lowest: of siftlm's scores, the one that "
                              "kept injected junk out best in its noisy-pool benchmark; no score beat random subsets "
                              "on clean data there: docs/experiments.md)")
    budget: int | float = opt(DEFAULT_BUDGET, "a fraction of the examples in (0, 1] (1.0 keeps all) or a count "
                                              "written as an integer (10); default 0.5: with lowest lp_app a generous "
                                              "junk filter (no difference from random halves detected on the noisy "
                                              "pool; a 10 % pick by it was worse than random on clean data)")
    budget_tokens: int | float | None = opt(None, "a token budget instead: the selection's prompt + response tokens "
                                                  "at most this many (an integer) or this fraction of all (in (0, 1])")
    budget_on: str = opt("all", "what --budget-tokens counts: all (prompt + response tokens) | response (the supervised "
                                "tokens a fine-tune learns from)")
    language: str = opt("en", "the language answers should be in (ISO 639-1): the behaviour detectors' report")
    target: str | None = opt(None, "targeted selection: a data file of examples of what you want (a few dozen); "
                                   "selects the examples nearest to them instead of scoring (see --target-method)")
    target_method: str = opt("nearest", "with --target: nearest (sentence-embedding cosine; the cheapest, and it found a "
                                        "minority target's source best; no method beat random on the target in "
                                        "siftlm's targeted grids) | repr (mean-pooled hidden states, round-robin over "
                                        "the targets, RDS+) | less (LoRA-gradient cosine, LESS)")
    direction: str | None = opt(None, "high | low (default: the score's own)")
    ifd: bool = opt(True, "run the response-only pass for IFD")
    reference: str | None = opt(None, "training folder of the reference model (default OUT/reference); a finished "
                                      "siftlm training folder is reused with its own settings")
    signals: SignalConfig = opt(factory=SignalConfig)
    train: TrainConfig = opt(factory=TrainConfig)


@dataclass
class ReproduceConfig:
    model: str = opt("builtin:smollm2", "model folder, .gguf file, builtin:<name> or hub id")
    data: str = opt("", "SFT data for the DavIR, LP and DPP tables (default: the built-in alpaca_en_demo)")
    pairs: str = opt("", "preference pairs for DavIR Table 3 (default: the built-in dpo_en_demo)")
    out: str = opt("siftlm-reproduce", "output folder", aliases=("output-dir",))
    budget: int | float = opt(0.25, "dpp-eq3: subset size, a fraction in (0, 1] or an integer count")
    dpo_steps: int = opt(40, "davir-table3: steps of the vanilla DPO run (2 pairs per step)")
    dpo_lr: float = opt(5e-4, "davir-table3: learning rate of the DPO run")
    pair_limit: int | None = opt(64, "davir-table3: pairs used")
    n_boot: int = opt(1000, "bootstrap resamples for the confidence intervals")
    grids: str = opt("", "dpp-fig2 / dpp-fig4: experiment grid YAMLs whose cells were run, comma-separated (their "
                         "committed results; per-cell LDDs are cached beside them)")
    signals: SignalConfig = opt(factory=SignalConfig)
    train: TrainConfig = opt(factory=TrainConfig)


@dataclass
class JudgeConfig:
    """An LLM judge behind any OpenAI-compatible endpoint (``siftlm.evaluate.judge``)."""
    url: str = opt("", "judge: an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1", cli="judge-url")
    model: str = opt("gpt-4o-mini", "judge: the model's name at that endpoint", cli="judge-model")
    key_env: str = opt("OPENAI_API_KEY", "judge: the environment variable holding the API key (never logged)",
                       cli="judge-key-env")
    concurrency: int = opt(4, "judge: requests in flight")
    timeout_s: float = opt(30.0, "judge: seconds one request may take before it counts as unanswered",
                           cli="judge-timeout")
    retry_budget_s: float = opt(300.0, "judge: seconds of retrying (waits and timed-out attempts) for the whole run; "
                                       "when spent and the judge stays silent, the remaining items fail at once",
                                cli="judge-retry-budget")
    max_retries: int = opt(6, "judge: retries of one request (rate limits, server errors, timeouts, lost connections)",
                           cli="judge-max-retries")
    backoff_s: float = opt(1.0, "judge: the first wait before a retry (doubles each time)", hidden=True)
    max_tokens: int = opt(512, "judge: reply tokens", hidden=True)
    max_failures: float = opt(0.5, "judge: exit with an error when more than this share of the items failed (0: any "
                                   "failure; every failure is written to failures.jsonl either way)",
                              cli="judge-max-failures")
    progress: bool = opt(True, hidden=True)


@dataclass
class EvaluateConfig:
    eval: str = opt("builtin:alpaca-eval", "evaluation sets, comma-separated: builtin:alpaca-eval, builtin:mt-bench, or "
                                           "data files (their assistant turns are the references)")
    out: str = opt("siftlm-eval", "output folder", aliases=("output-dir",))
    limit: int | None = opt(None, "use only the first N items of each set")
    loss: bool = opt(True, "held-out loss of the reference answers")
    generate: bool = opt(False, "generate answers (written in alpaca_eval's model-outputs format)")
    behaviour: bool = opt(False, "what the model does: greedy answers to each first turn, the detectors on them "
                                 "(refusal, wrong language, repetition, empty, echo; rates with CIs) and the "
                                 "propensities of fixed junk continuations (behaviour.parquet per set)")
    language: str = opt("en", "behaviour: the language answers should be in (ISO 639-1 code)")
    max_new_tokens: int = opt(256, "generation: tokens per answer")
    sample: bool = opt(False, "generation: sample (seeded) instead of greedy")
    seed: int = opt(0, "seed of sampling and of the bootstrap")
    generator: str = opt("", "generation: the name written in each output's generator field (default: the model)")
    judge_mode: str = opt("auto", "judge: pairwise (against the references or --compare) | single (1-10 grades, "
                                  "MT-bench style) | auto (single for MT-bench, pairwise otherwise)")
    compare: str | None = opt(None, "judge: another model's outputs (alpaca_eval format JSON) to compare against instead "
                                    "of the references")
    n_boot: int = opt(1000, "bootstrap resamples")
    judge: JudgeConfig = opt(factory=JudgeConfig)
    signals: SignalConfig = opt(factory=SignalConfig)


@dataclass
class PlanConfig:
    gpus: int = opt(0, "GPUs the run will use (0: this machine's CPU); passes split over them (--backend ray), training "
                       "is data-parallel over them")
    train_efficiency: float = opt(0.9, "data-parallel training's scaling efficiency over --gpus when bench/train_parallel.py "
                                       "has not measured it for this model and device")
    params: str | None = opt(None, "model size when the model is not on this machine, e.g. 7e9 or 7B (tokens are then "
                                   "counted with builtin:smollm2's tokenizer, said in the output)")
    scale_to: int | None = opt(None, "estimate for this many examples (token counts scaled from DATA's)")
    sample: int = opt(2000, "examples tokenised to count tokens (a seeded random sample; the rest extrapolated)")
    epochs: int = opt(2, "reference fine-tune epochs", aliases=("num-train-epochs",))
    full: bool = opt(False, "full fine-tuning (6 x params FLOPs per token) instead of LoRA (4 x)")
    mfu: float = opt(0.3, "assumed fraction of peak FLOP/s when no benchmark result exists for the model and device")
    peak_tflops: float | None = opt(None, "peak TFLOP/s of one device (default: 989, an H100/H200's dense bf16, for GPUs; "
                                          "a timed matmul on this CPU)")
    bench: str = opt("bench/out,runs/results/bench", "folders of bench/loss_pass.py and bench/train_step.py results; "
                                                      "a measured throughput for this model and device is used first")
    device: str = opt("auto", "auto (cuda with --gpus, else cpu) | cpu | cuda: the device the estimate is for")


# Paper settings as named presets: {config class: {field: value}}. A preset sets what the user did not set.
PRESETS = {
    "lp-paper": {"TrainConfig": {"full": True, "epochs": 3, "lr": 2e-5}},
    "davir-paper": {"TrainConfig": {"full": True, "epochs": 3, "lr": 2e-5}},
}
PRESET_HELP = ("paper settings for the reference fine-tune: lp-paper (learning-percentage §3: full fine-tuning, "
               "3 epochs) | davir-paper (DavIR Alg. 1: the base fine-tuned on the full set, full fine-tuning, 3 epochs). "
               "Neither paper states a learning rate; both use Stanford Alpaca's 2e-5. Options given explicitly win")


# the experiment grid's settings live in their own module (imported last: they build on the classes above)
from siftlm.config.experiment import (  # noqa: E402, F401
    METRIC_NAMES,
    BehaviourConfig,
    ExperimentConfig,
    InjectConfig,
    PoolConfig,
    PrimaryConfig,
    TargetConfig,
)
