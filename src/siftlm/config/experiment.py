"""The experiment grid's settings (``siftlm experiment GRID.yaml``): the pool, injected junk, a target set, behaviour
evaluation, the primary endpoint and the grid itself. Part of ``siftlm.config`` (re-exported there)."""

from __future__ import annotations

from dataclasses import dataclass

from siftlm.config import SignalConfig, TrainConfig, opt  # defined before siftlm.config imports this module


@dataclass
class PoolConfig:
    """The pool an experiment selects from, built from ``data``: a seeded held-out split first, then the pool."""
    size: int | None = opt(None, "examples in the pool (default: every valid example not held out)")
    heldout: int = opt(0, "examples set aside (seeded) as an in-distribution evaluation set no selection can draw "
                          "from; evaluate on it with the eval set name 'heldout'")
    seed: int = opt(0, "seed of the held-out split and of the pool's order")
    max_chars: int | None = opt(None, "use only examples of at most this many characters (all turns; keeps every pool "
                                      "example within max_length and bounds the cost; ~4 characters a token)")
    sources: list = opt(factory=list, help="mix the pool from several datasets instead of data: [{data, size, name}] "
                                           "(data: builtin:<name> or a file; preference data gives its chosen answers); "
                                           "each row's source is recorded with the labels")


@dataclass
class InjectConfig:
    """Labelled corruptions injected into a copy of the pool (the noisy-pool benchmark); the labels reach only the
    benchmark's analysis, never a score or a selector."""
    rate: float = opt(0.0, "share of the pool to corrupt, exactly round(rate x N) rows (0: a clean pool)")
    kinds: list = opt(factory=lambda: ["swap", "truncate", "repeat", "near_dup", "refusal", "foreign"],
                      help="corruptions, spread evenly: swap | truncate | repeat | near_dup | refusal | foreign")
    seed: int = opt(0, "seed of which rows are corrupted and how")


@dataclass
class TargetConfig:
    """A query set a targeted selection is steered toward, and a disjoint evaluation set from the same distribution
    (``siftlm.recipes.target``); the evaluation set is the grid's eval set ``target``."""
    data: str = opt("builtin:alpaca-eval", "where both come from: an evaluation set (builtin:alpaca-eval or a file), "
                                           "or source:<name>, one of the pool's sources, held out of the pool")
    query: int = opt(50, "query examples (stratified over the set's sources)")
    eval: int = opt(150, "evaluation examples, none sharing an instruction with a query example")
    seed: int = opt(0, "seed of both samples")


@dataclass
class BehaviourConfig:
    """What a fine-tuned model does on each evaluation set's prompts (``siftlm.evaluate.behaviour``): greedy answers,
    the detectors on them, and the teacher-forced propensities of fixed junk continuations."""
    max_new_tokens: int = opt(96, "tokens generated per answer (greedy, first turn)")
    language: str = opt("en", "the language answers should be in (an ISO 639-1 code): the wrong-language detector")
    propensity: bool = opt(True, "also score the fixed refusal and foreign-language continuations after each prompt")
    sets: list = opt(factory=list, help="the evaluation sets to generate on (default: every set)")


METRIC_NAMES = ("loss_per_token", "loss_per_item", "refusal", "wrong_language", "repetition", "empty", "echo", "words",
                "prop_refusal", "prop_foreign")


@dataclass
class PrimaryConfig:
    """The endpoint a grid's verdicts rest on, fixed before it runs; every other metric is shown as secondary."""
    metric: str = opt("", "loss_per_token (the default: held-out loss, summed NLL / summed tokens, what 'eval loss' "
                                        "and perplexity mean) | loss_per_item (mean of each item's per-token loss) | "
                                        "refusal | wrong_language | repetition | empty | echo (rates of greedy answers) "
                                        "| prop_refusal | prop_foreign (propensities)")
    sets: list = opt(factory=list, help="the evaluation sets it is measured on, items pooled (default: the first set)")
    why: str = opt("", "why this endpoint: written into the tables")


@dataclass
class ExperimentConfig:
    """A grid of selection methods x budgets x seeds over one pool; each cell: select -> fine-tune -> evaluate.
    Filled from the grid YAML (unknown keys are errors)."""
    data: str = opt("builtin:alpaca_en_demo", "the dataset (builtin:alpaca_en_demo or a file): the pool is built from "
                                              "it (pool:) or the scores belong to it (scores:)")
    scores: str = opt("", "scores.parquet of that data (siftlm score / run); empty: the experiment scores its pool")
    model: str = opt("builtin:smollm2", "the model every cell fine-tunes")
    selector_model: str | None = opt(None, "the model the scores (and features) come from, when it is not --model "
                                           "(small selects for large); recorded in the results")
    features: str | None = opt(None, "features for dpp / cluster / repr methods (.parquet id + vector); with a pool, "
                                     "each method's default pass (grads for dpp, embed for cluster and dedup, "
                                     "lm-embed for repr) or a pass name")
    pool: PoolConfig = opt(factory=PoolConfig)
    inject: InjectConfig = opt(factory=InjectConfig)
    grad_norm: bool = opt(True, "score the pool's grad_norm (a LoRA-gradient pass over the pool; false skips it, "
                                "e.g. for a model whose large vocabulary makes that pass the costliest)")
    crossfit: bool = opt(False, "also score DavIR with a cross-fitted reference (davir_xfit: two references, each "
                                "trained on one half of the pool and scoring the other)")
    methods: list = opt(factory=lambda: ["random", "highest:davir", "full"],
                        help="random | full | highest:<score> | lowest:<score> | cluster:<score> | cluster-random | dpp | "
                             "<score>+dpp | repr | dedup | or a mapping of select options with a name")
    budgets: list = opt(factory=lambda: [0.1], help="example budgets: fractions in (0, 1] or integer counts")
    budget_tokens: list = opt(factory=list, help="token budgets (prompt + response tokens of the selection): fractions "
                                                 "of the pool's tokens in (0, 1] or integer counts; cells for every "
                                                 "method beside the example budgets")
    seeds: list = opt(factory=lambda: [0], help="seeds of every method's fine-tunes (and of its selection when seeded)")
    random_subsets: int | None = opt(None, "random subsets per budget (seeds 0..R-1, each also the fine-tune's seed); "
                                           "default: as many as seeds. Random is a distribution: use >= 5")
    seeds_for: dict = opt(factory=dict, help="seeds of one method in place of seeds, by method name, e.g. {full: [0]}: "
                                             "a grid cut to fit the time says which arms ran fewer seeds")
    finetune: bool = opt(True, "fine-tune and evaluate the cells (false: score the pool and write the noisy-pool "
                               "analysis only)")
    eval: str = opt("builtin:alpaca-eval", "evaluation sets, comma-separated: heldout (the pool's held-out split), "
                                           "builtin:alpaca-eval, builtin:mt-bench or files")
    eval_limit: int | None = opt(None, "items per evaluation set: a seeded sample stratified over the set's sources")
    eval_seed: int = opt(0, "seed of the evaluation sample")
    eval_max_length: int = opt(1024, "max tokens of an evaluation item (long reference answers, e.g. MT-bench's, need "
                                     "more than the pool's max_length)")
    out: str = opt("siftlm-experiment", "output folder")
    n_boot: int = opt(2000, "bootstrap resamples")
    budget_on: str = opt("all", "what budget_tokens counts: all (prompt + response tokens) | response (the supervised "
                                "tokens a fine-tune learns from)")
    target: TargetConfig | None = opt(None, "a query set for targeted methods (target: query) and its disjoint "
                                            "evaluation set (eval set 'target'); keys: data, query, eval, seed",
                                      nested=TargetConfig)
    behaviour: BehaviourConfig | None = opt(None, "also measure what each model does: greedy answers, detectors, "
                                                  "propensities (keys: max_new_tokens, language, propensity, sets)",
                                            nested=BehaviourConfig)
    primary: PrimaryConfig = opt(factory=PrimaryConfig)
    signals: SignalConfig = opt(factory=SignalConfig)
    train: TrainConfig = opt(factory=TrainConfig)
    reference: TrainConfig | None = opt(None, "the reference fine-tune that scores the pool (default: as train)",
                                        nested=TrainConfig)
