"""Pretraining the tiny ShapeWorld Janus (`ospo shapeworld pretrain`): the config (config.py), the data the phases
train on (mixture.py, with scenes.py and find.py), the phases (vq.py, vision.py, lm.py) over a resumable state
(state.py), checkpoint surgery (surgery.py), one stage's run with its dev evaluation (loop.py) and the chain of
stages that made the shipped checkpoint (recipe.py, recipes/).

The world (ospo.shapeworld's other modules) knows nothing of this package; this package drives the model through
the adapter (ospo.model) and builds the checkpoint itself (ospo.tiny). Its public names are importable from here.
"""

from ospo.shapeworld.pretrain.config import (
    DATA_VERSION, REMOVED_FIELDS, PretrainConfig, config_fields, native_bf16, resume_config, saved_config,
)
from ospo.shapeworld.pretrain.lm import (
    LMBatch, answer_loss, curriculum_copies, find_copies, find_plan, find_rows, lm_batch, lm_parameters, lm_step_loss,
    t2i_loss, text_rows, train_find, train_lm, train_text, vqa_copies,
)
from ospo.shapeworld.pretrain.loop import dev_evaluate, pretrain
from ospo.shapeworld.pretrain.recipe import check_out_dir, load_recipe, recipe_names, run_recipe, stage_dir
from ospo.shapeworld.pretrain.surgery import (
    CFG_SCALE, add_factor_head, assemble, cell_labels, factor_matrix, fold_factor_head, init_code_embeddings,
    init_generation_head, reinit_outside_vq, shapeworld_spec,
)
from ospo.shapeworld.pretrain.vision import train_aligner, train_vision, word_targets
from ospo.shapeworld.pretrain.vq import decode_crop, train_vq_decoder, vq_batch, vq_readback

__all__ = [
    "CFG_SCALE", "DATA_VERSION", "REMOVED_FIELDS", "LMBatch", "PretrainConfig", "add_factor_head", "answer_loss",
    "assemble", "cell_labels", "check_out_dir", "config_fields", "curriculum_copies", "decode_crop", "dev_evaluate",
    "factor_matrix", "find_copies", "find_plan", "find_rows", "fold_factor_head", "init_code_embeddings",
    "init_generation_head", "lm_batch", "lm_parameters", "lm_step_loss", "load_recipe", "native_bf16", "pretrain",
    "recipe_names", "reinit_outside_vq", "resume_config", "run_recipe", "saved_config", "shapeworld_spec",
    "stage_dir", "t2i_loss", "text_rows", "train_aligner", "train_find", "train_lm", "train_text", "train_vision",
    "train_vq_decoder", "vq_batch", "vq_readback", "vqa_copies", "word_targets",
]
