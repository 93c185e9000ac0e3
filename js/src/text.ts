/** Text in and out: tokenization with @huggingface/tokenizers (the folder's tokenizer.json, as Python's
 * ``tokenizers`` reads it) and chat rendering with the model's own template (@huggingface/jinja). */

import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";

import type { SpecialTokens } from "./manifest.js";
import { tokenOffsets, tokenizerLayout, type Span, type TokenizerLayout } from "./offsets.js";

export interface Message {
  role: string;
  content: string;
  [key: string]: unknown;
}

export interface Encoded {
  ids: number[];
  /** each token's character span (code points) in the encoded text; (0, 0) for tokens the post-processor adds */
  offsets: Span[];
}

export class TextCodec {
  private readonly tokenizer: Tokenizer;
  private readonly layout: TokenizerLayout;
  private template: Template | null = null; // parsed when first used: a plain prompt never needs it

  constructor(
    tokenizerJson: Record<string, unknown>,
    readonly chatTemplate: string | null,
    private readonly specialTokens: SpecialTokens,
  ) {
    this.tokenizer = new Tokenizer(tokenizerJson, {}); // like Python's Tokenizer.from_file: tokenizer.json alone
    this.layout = tokenizerLayout(tokenizerJson);
  }

  encode(text: string, addSpecialTokens = true): Encoded {
    const core = this.tokenizer.encode(text, { add_special_tokens: false });
    const offsets = tokenOffsets(
      text,
      core.tokens.map((token, i) => ({ token, added: this.layout.added.get(core.ids[i]) ?? null })),
      this.layout,
    );
    if (!addSpecialTokens) return { ids: core.ids, offsets };
    const ids = this.tokenizer.encode(text, { add_special_tokens: true }).ids;
    const at = findRun(ids, core.ids); // the post-processor's special tokens around the text's tokens
    if (at < 0) throw new Error("the tokenizer's post-processor changed the text's tokens; offsets are unknown");
    return { ids, offsets: ids.map((_, i) => (i >= at && i < at + core.ids.length ? offsets[i - at] : [0, 0])) };
  }

  /** The ids of ``text`` without special tokens (no offsets). */
  ids(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: number[]): string {
    if (!ids.length) return "";
    return this.tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /** Each token decoded on its own (what a person reads for it). */
  tokenTexts(ids: number[]): string[] {
    return ids.map((id) => this.decode([id]));
  }

  /** Chat messages rendered with the model's template, as transformers' ``apply_chat_template`` does. */
  renderChat(messages: Message[], addGenerationPrompt = true): string {
    if (!this.chatTemplate) throw new Error("this model has no chat template; pass a plain prompt instead");
    try {
      this.template ??= new Template(this.chatTemplate);
      return this.template.render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: this.specialTokens.bos_token ?? "",
        eos_token: this.specialTokens.eos_token ?? "",
      });
    } catch (error) {
      throw new Error(`chat template: ${(error as Error).message}`);
    }
  }
}

/** Where ``run`` starts in ``ids``, or -1. */
function findRun(ids: number[], run: number[]): number {
  for (let at = 0; at + run.length <= ids.length; at++) {
    if (run.every((id, k) => ids[at + k] === id)) return at;
  }
  return -1;
}
