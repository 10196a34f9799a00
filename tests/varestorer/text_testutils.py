"""Text models for the VARestorer tests: a fake prompt encoder and captioner (no transformers), and tiny random T5 /
BLIP built with transformers' config classes and a word-level tokenizer (the callers skip without transformers)."""
import hashlib
from typing import List

import torch

WORDS = ["<pad>", "</s>", "<unk>", "[CLS]", "a", "dog", "cat", "photo", "of", "the", "sea", "house", "tree", "red"]


class FakeEncoder:
    """Deterministic (len(words) + 1, channels) features per prompt; counts its calls."""

    def __init__(self, channels: int = 128, identity: str = "fake-encoder"):
        self.channels, self.identity, self.calls, self.prompts = channels, identity, 0, []

    def encode(self, prompts) -> List[torch.Tensor]:
        self.calls += 1
        self.prompts += list(prompts)
        out = []
        for p in prompts:
            seed = int(hashlib.sha256(p.encode()).hexdigest()[:8], 16)
            out.append(torch.randn(len(p.split()) + 1, self.channels, generator=torch.Generator().manual_seed(seed)))
        return out


class FakeCaptioner:
    """A caption from an image's mean colour; counts its calls."""

    def __init__(self, identity: str = "fake-captioner"):
        self.identity, self.calls, self.images, self.shapes = identity, 0, 0, []

    def caption(self, images) -> List[str]:
        self.calls += 1
        self.images += len(images)
        self.shapes += [img.shape for img in images]
        return ["a red photo" if img[..., 0].mean() > img[..., 2].mean() else "a photo of the sea" for img in images]


def word_tokenizer(template: str = "$A </s>", bos: bool = False):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   **({"bos_token": "[CLS]"} if bos else {}))


def tiny_t5(channels: int = 128, seed: int = 0):
    """(T5EncoderModel with d_model = channels, tokenizer)."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(WORDS), d_model=channels, d_kv=16, d_ff=64, num_layers=2, num_heads=4,
                   pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(cfg).eval(), word_tokenizer()


def tiny_blip(seed: int = 0):
    """(BlipForConditionalGeneration at 32 px, its image processor, tokenizer)."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    torch.manual_seed(seed)
    text = dict(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, bos_token_id=3, sep_token_id=1, pad_token_id=0, eos_token_id=1)
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
                  patch_size=16)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision)).eval()
    model.generation_config.max_new_tokens = 6
    processor = BlipImageProcessor(size={"height": 32, "width": 32})
    return model, processor, word_tokenizer("$A", bos=True)
