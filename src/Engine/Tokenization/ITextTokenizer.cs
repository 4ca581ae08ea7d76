namespace AttributionFleet.Engine.Tokenization;

/// <summary>A tokenizer that gives the same ids as the Hugging Face tokenizer of the model.</summary>
public interface ITextTokenizer
{
    /// <summary>
    /// Encodes one text with the model's special tokens ([CLS] ... [SEP] for BERT/DistilBERT, &lt;s&gt; ... &lt;/s&gt;
    /// for RoBERTa), cutting the content from the end so that the total is at most <paramref name="maxLength"/>.
    /// Empty text gives just the two special tokens.
    /// </summary>
    TokenizedText Encode(string text, int maxLength);

    int PadId { get; }
    int UnkId { get; }
    int MaskId { get; }

    /// <summary>[CLS] or &lt;s&gt;.</summary>
    int StartId { get; }

    /// <summary>[SEP] or &lt;/s&gt;.</summary>
    int EndId { get; }

    /// <summary>True for the pad, start/end (cls/sep, bos/eos), mask and unknown tokens.</summary>
    bool IsSpecial(int id);

    string IdToToken(int id);

    int VocabSize { get; }
}
