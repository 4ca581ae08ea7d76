using System.Collections.Concurrent;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Tokenization;

namespace AttributionFleet.Engine.Text;

/// <summary>
/// Token lengths from a model folder's config and tokenizer alone, without loading its weights (a job planner needs
/// lengths to cut batches; the weights belong to whichever worker explains them). One tokenizer per folder, kept.
/// </summary>
public sealed class TokenCounter
{
    public static TokenCounter Shared { get; } = new();

    private readonly ConcurrentDictionary<string, Lazy<(ModelConfig Config, ITextTokenizer Tokenizer)>> _folders = new();

    /// <summary>The folder's config (hidden size, maximum length) and tokenizer, read once.</summary>
    public (ModelConfig Config, ITextTokenizer Tokenizer) For(string folder)
    {
        var entry = _folders.GetOrAdd(Path.GetFullPath(folder), f => new Lazy<(ModelConfig, ITextTokenizer)>(() =>
        {
            if (Directory.Exists(f)) f = CheckpointFolder.Resolve(f); // a hub-cache folder names its snapshot, as LoadedModel reads it
            var config = ModelConfig.Load(Path.Combine(f, Models.ModelLoader.ConfigFile));
            return (config, TokenizerLoader.Load(f, config.ModelType));
        }));
        try { return entry.Value; }
        catch
        {
            _folders.TryRemove(Path.GetFullPath(folder), out _); // a folder fixed later is read again
            throw;
        }
    }

    /// <summary>Token count of each text after truncation to <paramref name="maxLength"/> (or the model's maximum), as <see cref="TextExplainer.Tokenize"/> counts (and refuses blank texts as it does).</summary>
    public IReadOnlyList<int> Lengths(string folder, IReadOnlyList<string> texts, int? maxLength)
    {
        var (config, tokenizer) = For(folder);
        int max = Math.Min(maxLength ?? int.MaxValue, config.MaxSequenceLength);
        var lengths = new int[texts.Count];
        for (int i = 0; i < texts.Count; i++)
        {
            if (TextContent.IsBlank(texts[i])) throw new Attribution.AttributionRequestException($"texts[{i}]", $"text {i} is empty");
            lengths[i] = tokenizer.Encode(texts[i], max).Ids.Length;
        }
        return lengths;
    }
}
