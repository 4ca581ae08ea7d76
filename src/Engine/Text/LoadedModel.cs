using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Tokenization;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Text;

/// <summary>Picks the compute device: "cuda" when available, else "cpu"; a configured value wins.</summary>
public static class DeviceSelector
{
    public static Device Resolve(string? configured = null)
    {
        var name = string.IsNullOrWhiteSpace(configured) || configured == "auto"
            ? (cuda.is_available() ? "cuda" : "cpu")
            : configured;
        if (name.StartsWith("cuda", StringComparison.Ordinal) && !cuda.is_available())
            throw new ModelLoadException($"Device '{name}' was configured but CUDA is not available in this build or on this machine", field: "device");
        return new Device(name);
    }
}

/// <summary>A model folder loaded once: config, float32 weights (float64 made on first use) and tokenizer.</summary>
public sealed class LoadedModel : IDisposable
{
    private readonly Dictionary<Precision, ITextModel> _copies = new();
    private readonly object _lock = new();

    public string Directory { get; }
    public ModelConfig Config => Float32.Config;
    public ITextModel Float32 { get; }
    public ITextTokenizer Tokenizer { get; }
    public Device Device => Float32.Device;

    /// <summary>Size of the weights in bytes (float32), for memory budgets.</summary>
    public long WeightBytes { get; }

    private LoadedModel(string directory, ITextModel model, ITextTokenizer tokenizer, long bytes)
    {
        Directory = directory;
        Float32 = model;
        Tokenizer = tokenizer;
        WeightBytes = bytes;
    }

    public static LoadedModel Load(string directory, Device? device = null)
    {
        if (System.IO.Directory.Exists(directory)) directory = CheckpointFolder.Resolve(directory); // weights and tokenizer from the same snapshot
        var model = ModelLoader.Load(directory, device ?? DeviceSelector.Resolve());
        try
        {
            var tokenizer = TokenizerLoader.Load(directory, model.Config.ModelType);
            CheckTokenizerFits(directory, tokenizer, model.Config);
            long bytes = CheckpointFolder.WeightBytes(directory);
            return new LoadedModel(directory, model, tokenizer, bytes);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A tokenizer whose ids reach past the word embeddings would fail deep inside the first forward (or, worse, with a
    /// padded id, read another row): refuse it at load, naming the folder and both sizes.
    /// </summary>
    private static void CheckTokenizerFits(string directory, ITextTokenizer tokenizer, ModelConfig config)
    {
        int largest = new[] { tokenizer.PadId, tokenizer.UnkId, tokenizer.StartId, tokenizer.EndId, tokenizer.VocabSize - 1 }.Max();
        if (largest >= config.VocabSize)
            throw new ModelLoadException(
                $"The tokenizer in {directory} has ids up to {largest} but config.json's vocab_size is {config.VocabSize}: the tokenizer files do not belong to this model's weights. Put the model's own tokenizer files beside its config.json",
                directory, "vocab_size");
    }

    public ITextModel For(Precision precision)
    {
        if (precision == Precision.Float32) return Float32;
        lock (_lock)
        {
            if (!_copies.TryGetValue(precision, out var copy))
                _copies[precision] = copy = Float32.To(ScalarTypeOf(precision));
            return copy;
        }
    }

    public static ScalarType ScalarTypeOf(Precision precision) => precision switch
    {
        Precision.Float64 => ScalarType.Float64,
        Precision.Float16 => ScalarType.Float16,
        Precision.BFloat16 => ScalarType.BFloat16,
        _ => ScalarType.Float32,
    };

    public void Dispose()
    {
        Float32.Dispose();
        foreach (var copy in _copies.Values) copy.Dispose();
    }
}
