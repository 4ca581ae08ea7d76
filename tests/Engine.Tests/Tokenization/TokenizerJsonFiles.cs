using System.Text.Json;
using System.Text.Json.Nodes;

namespace AttributionFleet.Engine.Tests.Tokenization;

/// <summary>
/// Writes tokenizer.json files in the layout Hugging Face's `tokenizers` serializes (there is no `tokenizers`
/// package here): the sections as BertTokenizerFast and RobertaTokenizerFast save them.
/// </summary>
internal static class TokenizerJsonFiles
{
    public static JsonObject Added(int id, string content, bool special = true, bool normalized = false, bool lstrip = false) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = lstrip, ["rstrip"] = false,
        ["normalized"] = normalized, ["special"] = special,
    };

    /// <summary>bert-base-(un)cased's tokenizer.json for a vocabulary given by id.</summary>
    public static JsonObject Bert(IReadOnlyList<string> vocab, bool lowercase, bool? stripAccents = null)
    {
        var ids = new JsonObject();
        for (int i = 0; i < vocab.Count; i++)
        {
            ids[vocab[i]] = i;
        }

        int Id(string t) => Enumerable.Range(0, vocab.Count).Last(i => vocab[i] == t);
        var added = new JsonArray();
        foreach (string s in new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" })
        {
            added.Add(Added(Id(s), s));
        }

        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = new JsonObject
            {
                ["type"] = "BertNormalizer", ["clean_text"] = true, ["handle_chinese_chars"] = true,
                ["strip_accents"] = stripAccents is { } s2 ? JsonValue.Create(s2) : null, ["lowercase"] = lowercase,
            },
            ["pre_tokenizer"] = new JsonObject { ["type"] = "BertPreTokenizer" },
            ["post_processor"] = Template("[CLS]", Id("[CLS]"), "[SEP]", Id("[SEP]")),
            ["decoder"] = new JsonObject { ["type"] = "WordPiece", ["prefix"] = "##", ["cleanup"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "WordPiece", ["unk_token"] = "[UNK]", ["continuing_subword_prefix"] = "##",
                ["max_input_chars_per_word"] = 100, ["vocab"] = ids,
            },
        };
    }

    /// <summary>roberta-base's tokenizer.json for a vocab.json and merges.</summary>
    public static JsonObject Roberta(IReadOnlyDictionary<string, int> vocab, IEnumerable<string> merges, bool addPrefixSpace = false)
    {
        var ids = new JsonObject();
        foreach ((string t, int id) in vocab)
        {
            ids[t] = id;
        }

        var added = new JsonArray();
        foreach (string s in new[] { "<s>", "<pad>", "</s>", "<unk>" })
        {
            added.Add(Added(vocab[s], s));
        }

        added.Add(Added(vocab["<mask>"], "<mask>", lstrip: true));
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = addPrefixSpace, ["trim_offsets"] = true, ["use_regex"] = true },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "RobertaProcessing", ["sep"] = new JsonArray("</s>", vocab["</s>"]), ["cls"] = new JsonArray("<s>", vocab["<s>"]),
                ["trim_offsets"] = true, ["add_prefix_space"] = addPrefixSpace,
            },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = "", ["end_of_word_suffix"] = "",
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false, ["vocab"] = ids,
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode)new JsonArray(m.Split(' ').Select(p => (JsonNode)p!).ToArray())).ToArray()),
            },
        };
    }

    public static JsonObject Template(string cls, int clsId, string sep, int sepId) => new()
    {
        ["type"] = "TemplateProcessing",
        ["single"] = new JsonArray(
            new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = cls, ["type_id"] = 0 } },
            new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
            new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = sep, ["type_id"] = 0 } }),
        ["pair"] = new JsonArray(),
        ["special_tokens"] = new JsonObject
        {
            [cls] = new JsonObject { ["id"] = cls, ["ids"] = new JsonArray(clsId), ["tokens"] = new JsonArray(cls) },
            [sep] = new JsonObject { ["id"] = sep, ["ids"] = new JsonArray(sepId), ["tokens"] = new JsonArray(sep) },
        },
    };

    public static void Write(string dir, JsonObject tokenizer) =>
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizer.ToJsonString(new JsonSerializerOptions { WriteIndented = false }));
}
