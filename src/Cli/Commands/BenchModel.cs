using AttributionFleet.Engine.Architectures.DebertaV2;
using AttributionFleet.Engine.Architectures.ModernBert;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Text;
using static TorchSharp.torch;

namespace AttributionFleet.Cli.Commands;

/// <summary>
/// The classifier <c>fleet bench attribute --architecture</c> times: random base-sized weights (N(0, 0.02), zero biases,
/// norms 1/0) of one family, and the special ids its tokenizer gives. BERT is the cached bert-base-sized checkpoint
/// (<see cref="BenchCommand.BertBaseDir"/>), loaded from disk; DeBERTa-v3 and ModernBERT come from their config.json
/// (<see cref="RandomModels.DebertaV3BaseConfigJson"/>, <see cref="RandomModels.ModernBertBaseConfigJson"/>) read by the
/// family's own parser and built by <see cref="RandomModels.Create"/> through the family's weight table and
/// <c>IArchitecture.Build</c>: the model a checkpoint of that config loads as, without writing one to disk.
/// </summary>
internal sealed class BenchModel : IDisposable
{
    public const string Architectures = "bert|deberta-v2|modernbert";

    /// <summary>DeBERTa-v3-base's 128100-token vocabulary shrunk to bert-base's: the word-embedding lookup costs the same whatever its rows, and the table is 300 MiB smaller.</summary>
    public const int DebertaVocab = 30522;

    private readonly List<IDisposable> _owned = new();

    /// <summary>What the header line says the model is.</summary>
    public required string Description { get; init; }
    public required ITextModel Model { get; init; }

    /// <summary>[CLS], [SEP] and [PAD] of the family's tokenizer: the ends of every text, and the reference's filling.</summary>
    public required long Cls { get; init; }
    public required long Sep { get; init; }
    public required long Pad { get; init; }

    /// <summary>Random ids are drawn from [1000, IdLimit): ordinary tokens, below any special ones at the end of the vocabulary.</summary>
    public required int IdLimit { get; init; }

    public static BenchModel Create(string architecture, int? layers, string? pooling, Precision precision, Device device)
    {
        if (pooling is not null && architecture != "modernbert")
            throw new UsageException("--pooling is ModernBERT's classifier_pooling; use it with --architecture modernbert");
        if (pooling is not null and not ("mean" or "cls")) throw new UsageException($"--pooling must be mean or cls, got '{pooling}'");
        if (layers is < 1) throw new UsageException($"--layers must be at least 1, got {layers}");
        switch (architecture)
        {
            case "bert":
            {
                int n = layers ?? 12;
                var loaded = LoadedModel.Load(BenchCommand.BertBaseDir(n), device);
                var bench = new BenchModel
                {
                    Description = $"bert-base-sized ({n} layers, 768, 12 heads, 3072)",
                    Model = loaded.For(precision), Cls = 101, Sep = 102, Pad = 0, IdLimit = 30522,
                };
                bench._owned.Add(loaded);
                return bench;
            }
            case "deberta-v2":
            {
                var config = RandomModels.ParseConfig(RandomModels.DebertaV3BaseConfigJson(layers ?? 12, DebertaVocab), "deberta-v3-base config.json");
                var s = DebertaV2Architecture.SettingsOf(config);
                string terms = string.Join("|", new[] { s.PositionToContent ? "p2c" : null, s.ContentToPosition ? "c2p" : null }.OfType<string>());
                return Build(config, precision, device, cls: 1, sep: 2, pad: 0, idLimit: config.VocabSize,
                    $"deberta-v3-base-sized ({config.Layers} layers, {config.HiddenSize}, {config.Heads} heads, {config.IntermediateSize}; relative attention {terms}, " +
                    $"position_buckets {s.PositionBuckets}, max_relative_positions {s.MaxRelativePositions}{(s.ShareAttentionKey ? ", share_att_key" : "")}" +
                    $"{(s.NormalizeRelativeEmbeddings ? ", norm_rel_ebd layer_norm" : "")}; vocab {config.VocabSize}, not the checkpoint's 128100: the lookup costs the same)");
            }
            case "modernbert":
            {
                var config = RandomModels.ParseConfig(RandomModels.ModernBertBaseConfigJson(layers ?? 22, pooling ?? "mean"), "ModernBERT-base config.json");
                var s = ModernBertArchitecture.SettingsOf(config);
                int global = s.SlidingLayers.Count(sliding => !sliding);
                // ModernBERT-base's specials sit at 50280 and above ([CLS] 50281, [SEP] 50282, [PAD] 50283, [MASK] 50284, unused).
                return Build(config, precision, device, cls: 50281, sep: 50282, pad: config.PadTokenId, idLimit: 50280,
                    $"modernbert-base-sized ({config.Layers} layers, {config.HiddenSize}, {config.Heads} heads, {config.IntermediateSize} GeGLU; global attention in {global} of the {config.Layers} layers, " +
                    $"a {s.LocalAttention}-token window in the others; rope theta {s.GlobalRopeTheta:0} / {s.LocalRopeTheta:0}; no biases; {s.Pooling.ToString().ToLowerInvariant()} pooling; vocab {config.VocabSize})");
            }
            default:
                throw new UsageException($"--architecture must be one of {Architectures}, got '{architecture}'");
        }
    }

    private static BenchModel Build(ModelConfig config, Precision precision, Device device, long cls, long sep, long pad, int idLimit, string description)
    {
        var float32 = RandomModels.Create(config, seed: 0, std: 0.02);
        ITextModel model = float32;
        if (precision != Precision.Float32 || device.type != TorchSharp.DeviceType.CPU)
        {
            model = float32.To(LoadedModel.ScalarTypeOf(precision), device);
            float32.Dispose();
        }
        var bench = new BenchModel { Description = description, Model = model, Cls = cls, Sep = sep, Pad = pad, IdLimit = idLimit };
        bench._owned.Add(model);
        return bench;
    }

    /// <summary>Random texts of <paramref name="length"/> tokens, [CLS] … [SEP] (<see cref="BenchCommand.RandomIds"/>'s draws).</summary>
    public long[,] RandomIds(int batch, int length, int seed) => BenchCommand.RandomIds(batch, length, IdLimit, seed, Cls, Sep);

    /// <summary>The reference: [CLS] [PAD] … [PAD] [SEP].</summary>
    public Tensor ReferenceIds(int length, Device device)
    {
        var ids = full(new long[] { 1, length }, Pad, dtype: ScalarType.Int64, device: device);
        ids[0, 0] = Cls;
        ids[0, length - 1] = Sep;
        return ids;
    }

    public void Dispose()
    {
        foreach (var owned in _owned) owned.Dispose();
    }
}
