namespace AttributionFleet.Engine.Tokenization.HuggingFace;

/// <summary>How a model family numbers the pieces of its SentencePiece model.</summary>
internal enum SentencePieceIdLayout
{
    /// <summary>
    /// XLM-RoBERTa (fairseq): &lt;s&gt;=0, &lt;pad&gt;=1, &lt;/s&gt;=2, &lt;unk&gt;=3, piece i (i ≥ 3) is i + 1, &lt;mask&gt; last
    /// (Hugging Face's XLMRobertaTokenizer: fairseq_offset 1).
    /// </summary>
    Fairseq,

    /// <summary>The SentencePiece ids as they are (ALBERT, DeBERTa-v2/v3: [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3); a mask token the model lacks is appended.</summary>
    Plain,
}

/// <summary>Builds the tokenizer of a SentencePiece model file (sentencepiece.bpe.model, spiece.model, spm.model).</summary>
internal static class SentencePieceTokenizers
{
    public static readonly string[] FileNames = ["sentencepiece.bpe.model", "spiece.model", "spm.model"];

    /// <summary>The id layout of a model_type, or null when it is not known here (refused rather than guessed).</summary>
    public static SentencePieceIdLayout? LayoutFor(string modelType) => modelType.ToLowerInvariant() switch
    {
        "xlm-roberta" => SentencePieceIdLayout.Fairseq,
        "albert" or "deberta-v2" => SentencePieceIdLayout.Plain,
        _ => null,
    };

    /// <param name="cls">The start token's name (tokenizer_config's cls_token), or null for the family's default.</param>
    public static PipelineTokenizer Load(string path, SentencePieceIdLayout layout, string? cls = null, string? sep = null,
        string? pad = null, string? unk = null, string? mask = null)
    {
        SentencePieceModelFile model = SentencePieceModelFile.Read(path);
        if (model.ModelType != 1)
        {
            throw new ModelLoadException(
                $"'{path}' is a SentencePiece model of type {model.ModelType} (1 is Unigram); only Unigram models are supported.", path, "trainer_spec.model_type");
        }

        var normalizer = new SentencePieceNormalizer(new PrecompiledCharsMap(model.PrecompiledCharsMap.Length > 0 ? model.PrecompiledCharsMap : [0, 0, 0, 0], path),
            model.AddDummyPrefix, model.RemoveExtraWhitespaces, model.EscapeWhitespaces);
        static bool Segmentable(SentencePiece p) => p.Type is PieceType.Normal or PieceType.UserDefined or PieceType.Byte;

        var pieces = new List<(string, double)>();
        var usable = new List<bool>();
        var added = new List<AddedToken>();
        int unkId;
        string startToken, endToken;
        switch (layout)
        {
            case SentencePieceIdLayout.Fairseq:
                foreach (string special in new[] { "<s>", "<pad>", "</s>", "<unk>" })
                {
                    added.Add(new AddedToken(pieces.Count, special, Special: true, Normalized: false));
                    pieces.Add((special, 0));
                    usable.Add(false);
                }

                for (int i = 3; i < model.Pieces.Count; i++)
                {
                    pieces.Add((model.Pieces[i].Piece, model.Pieces[i].Score));
                    usable.Add(Segmentable(model.Pieces[i]));
                }

                added.Add(new AddedToken(pieces.Count, "<mask>", Special: true, Normalized: false, LStrip: true));
                pieces.Add(("<mask>", 0));
                usable.Add(false);
                unkId = 3;
                (startToken, endToken) = (cls ?? "<s>", sep ?? "</s>");
                break;
            default:
                for (int i = 0; i < model.Pieces.Count; i++)
                {
                    SentencePiece p = model.Pieces[i];
                    pieces.Add((p.Piece, p.Score));
                    usable.Add(Segmentable(p));
                    if (p.Type is PieceType.Control or PieceType.Unknown)
                    {
                        added.Add(new AddedToken(i, p.Piece, Special: true, Normalized: false));
                    }
                }

                string maskName = mask ?? "[MASK]";
                if (!pieces.Any(p => p.Item1 == maskName))
                {
                    added.Add(new AddedToken(pieces.Count, maskName, Special: true, Normalized: false));
                    pieces.Add((maskName, 0));
                    usable.Add(false);
                }

                unkId = model.UnkId;
                (startToken, endToken) = (cls ?? "[CLS]", sep ?? "[SEP]");
                break;
        }

        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < pieces.Count; i++)
        {
            ids.TryAdd(pieces[i].Item1, i);
        }

        foreach (AddedToken a in added)
        {
            ids[a.Content] = a.Id;
        }

        int Require(string token, string field) => ids.TryGetValue(token, out int id)
            ? id
            : throw new ModelLoadException($"The SentencePiece model '{path}' has no {field} '{token}'.", path, field);

        var unigram = new UnigramModel(pieces, unkId, model.ByteFallback, id => usable[id], path);
        var post = new PostProcessing([(Require(startToken, "cls_token"), startToken)], [(Require(endToken, "sep_token"), endToken)], TrimOffsets: false);
        string padName = pad ?? (layout == SentencePieceIdLayout.Fairseq ? "<pad>" : "[PAD]");
        string maskToken = mask ?? (layout == SentencePieceIdLayout.Fairseq ? "<mask>" : "[MASK]");
        string unkName = unk ?? pieces[unkId].Item1;
        return new PipelineTokenizer(new TokenizerPipeline(path, normalizer, PreTokenizer: null, unigram, added, post,
            Require(padName, "pad_token"), Require(unkName, "unk_token"), Require(maskToken, "mask_token")));
    }
}
