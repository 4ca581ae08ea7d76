using System.Text.Json;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Training;

/// <summary>
/// What fine-tuning changed in a pretrained mean-pooling encoder, small enough to commit: for each fine-tuned layer a
/// low-rank delta <c>ΔW = B·A</c> (A [r, in], B [out, r]) on each of its four linear maps, and the new values of the
/// layer's biases and LayerNorm weights; plus the classification head on the pooled output. Merged into the base
/// weights (<see cref="Apply"/>), it gives a plain MeanPoolingClassifier checkpoint: the same architecture the engine
/// explains, nothing added at run time. The file records the SHA-256 of the base checkpoint it was trained on, so a
/// delta is never merged into other weights.
/// </summary>
public sealed class EncoderDelta : IDisposable
{
    public const string WeightsFile = "delta.safetensors";
    public const string InfoFile = "delta.json";
    public const string FormatName = "attributionfleet-encoder-delta/1";

    /// <summary>The four linear maps of a layer, with the weight each one adds its low-rank delta to.</summary>
    public static readonly string[] Maps = { "qkv", "attention_output", "intermediate", "output" };

    /// <summary>The vectors of a layer that fine-tuning replaces outright (a few thousand numbers).</summary>
    public static readonly string[] Vectors =
    {
        "qkv.bias", "attention_output.bias", "intermediate.bias", "output.bias",
        "attention_norm.weight", "attention_norm.bias", "output_norm.weight", "output_norm.bias",
    };

    public const string ClassifierWeight = "classifier.weight";
    public const string ClassifierBias = "classifier.bias";

    /// <summary>Layer indices (0-based, of the base encoder) the delta changes, ascending.</summary>
    public IReadOnlyList<int> Layers { get; }
    public IReadOnlyList<string> Labels { get; }
    public int Rank { get; }
    /// <summary>SHA-256 (hex) of the base encoder's model.safetensors the delta was trained on.</summary>
    public string BaseSha256 { get; }
    /// <summary>Tensors by name: <c>layers.{i}.{map}.lora_a|lora_b</c>, <c>layers.{i}.{vector}</c>, <c>classifier.*</c> (float32, CPU).</summary>
    public IReadOnlyDictionary<string, Tensor> Tensors { get; }

    public EncoderDelta(IReadOnlyList<int> layers, IReadOnlyList<string> labels, int rank, string baseSha256, IReadOnlyDictionary<string, Tensor> tensors)
    {
        Layers = layers.OrderBy(l => l).ToList();
        Labels = labels.ToList();
        Rank = rank;
        BaseSha256 = baseSha256;
        Tensors = tensors;
        var missing = ExpectedNames(Layers).Where(n => !tensors.ContainsKey(n)).ToList();
        if (missing.Count > 0) throw new ArgumentException($"encoder delta lacks {string.Join(", ", missing)}");
    }

    public static string LoraA(int layer, string map) => $"layers.{layer}.{map}.lora_a";
    public static string LoraB(int layer, string map) => $"layers.{layer}.{map}.lora_b";
    public static string Vector(int layer, string name) => $"layers.{layer}.{name}";

    private static IEnumerable<string> ExpectedNames(IEnumerable<int> layers) =>
        layers.SelectMany(l => Maps.SelectMany(m => new[] { LoraA(l, m), LoraB(l, m) }).Concat(Vectors.Select(v => Vector(l, v))))
            .Concat(new[] { ClassifierWeight, ClassifierBias });

    /// <summary><c>W + B·A</c>: the one place the merged weight is computed (training's forward and the merged checkpoint agree bit for bit).</summary>
    public static Tensor Merge(Tensor weight, Tensor a, Tensor b) => weight + b.matmul(a);

    /// <summary>
    /// The model's weight roles (see <see cref="Architectures.PostNormEncoder.PostNormEncoderArchitecture"/>) behind a
    /// map: the map's matrix is Q, K and V stacked ("qkv") or one role, its bias likewise.
    /// </summary>
    public static string[] RolesOf(string map) => map switch
    {
        "qkv" => new[] { "q", "k", "v" },
        "attention_output" => new[] { "o" },
        "intermediate" => new[] { "ff1" },
        "output" => new[] { "ff2" },
        _ => throw new ArgumentOutOfRangeException(nameof(map)),
    };

    /// <summary>The role of a replaced vector other than qkv.bias (which is q.b, k.b and v.b stacked).</summary>
    public static string RoleOfVector(string vector) => vector switch
    {
        "attention_output.bias" => "o.b",
        "intermediate.bias" => "ff1.b",
        "output.bias" => "ff2.b",
        "attention_norm.weight" => "ln1.w",
        "attention_norm.bias" => "ln1.b",
        "output_norm.weight" => "ln2.w",
        "output_norm.bias" => "ln2.b",
        _ => throw new ArgumentOutOfRangeException(nameof(vector)),
    };

    /// <summary>Layer <paramref name="layer"/>'s weight of <paramref name="map"/> in <paramref name="model"/> (Q, K, V stacked [3H, H] for qkv; a new tensor).</summary>
    public static Tensor BaseWeight(ITextModel model, int layer, string map) =>
        cat(RolesOf(map).Select(r => model.Weights[$"L{layer}.{r}"]).ToArray(), 0);

    /// <summary>Layer <paramref name="layer"/>'s value of a replaced vector in <paramref name="model"/> (q.b, k.b, v.b stacked for qkv.bias; a new tensor).</summary>
    public static Tensor BaseVector(ITextModel model, int layer, string vector) => vector == "qkv.bias"
        ? cat(new[] { "q.b", "k.b", "v.b" }.Select(r => model.Weights[$"L{layer}.{r}"]).ToArray(), 0)
        : model.Weights[$"L{layer}.{RoleOfVector(vector)}"].clone();

    /// <summary>
    /// The base encoder with the delta merged and the head attached: a MeanPoolingClassifier, built by the encoder's
    /// architecture from its weights by role. The weights the delta leaves alone share the encoder's storage through
    /// handles of their own (the model frees its handles, never <paramref name="encoder"/>'s); the tensors belong to
    /// the caller's dispose scope.
    /// </summary>
    public ITextModel Apply(ITextModel encoder)
    {
        var c = encoder.Config;
        if (c.Head != HeadKind.MeanPooling || encoder.HasClassifier)
            throw new ArgumentException($"an encoder delta applies to a bare mean-pooling encoder, not {c.Architecture}{(encoder.HasClassifier ? " with a classifier" : "")}");
        if (Layers.Count > 0 && Layers[^1] >= c.Layers)
            throw new ModelLoadException($"The encoder delta changes layer {Layers[^1]}, but the encoder has {c.Layers} layers", field: "layers");
        if (Tensors[ClassifierWeight].shape[1] != c.HiddenSize)
            throw new ModelLoadException($"The encoder delta's classifier takes {Tensors[ClassifierWeight].shape[1]} features, but the encoder's hidden size is {c.HiddenSize}", field: ClassifierWeight);
        var config = c with
        {
            Labels = Labels.ToList(),
            Architecture = "MeanPoolingClassifier",
            Problem = Labels.Count == 1 ? ProblemType.Regression : ProblemType.SingleLabel,
        };
        var architecture = Architectures.ArchitectureRegistry.Of(config);
        // New handles (never the delta's own): the model frees what it is given.
        Tensor T(string name) => Tensors[name].to(encoder.DType, encoder.Device).detach();
        var weights = new Dictionary<string, Tensor>();
        foreach (int i in Layers)
        {
            string p = $"L{i}.";
            long h = c.HiddenSize;
            foreach (var map in Maps)
            {
                using var baseWeight = BaseWeight(encoder, i, map);
                var merged = Merge(baseWeight, T(LoraA(i, map)), T(LoraB(i, map)));
                var roles = RolesOf(map);
                for (int r = 0; r < roles.Length; r++) weights[p + roles[r]] = roles.Length == 1 ? merged : merged.narrow(0, r * h, h);
            }
            var qkvBias = T(Vector(i, "qkv.bias"));
            weights[p + "q.b"] = qkvBias.narrow(0, 0, h);
            weights[p + "k.b"] = qkvBias.narrow(0, h, h);
            weights[p + "v.b"] = qkvBias.narrow(0, 2 * h, h);
            foreach (var v in Vectors.Where(v => v != "qkv.bias")) weights[p + RoleOfVector(v)] = T(Vector(i, v));
        }
        weights["cls"] = T(ClassifierWeight);
        weights["cls.b"] = T(ClassifierBias);
        foreach (var role in architecture.Weights(config, withClassifier: true).Roles)
            if (!weights.ContainsKey(role.Role)) weights[role.Role] = encoder.Weights[role.Role].detach();
        return architecture.Build(config, weights);
    }

    /// <summary>Writes delta.safetensors (float32, names sorted) and delta.json (labels, layers, rank, base, and <paramref name="facts"/>).</summary>
    public void Save(string dir, IReadOnlyDictionary<string, object?> facts)
    {
        Directory.CreateDirectory(dir);
        var tensors = Tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.to_type(ScalarType.Float32).contiguous())).ToList();
        SafeTensorsWriter.Write(Path.Combine(dir, WeightsFile), tensors, new Dictionary<string, string>
        {
            ["format"] = FormatName,
            ["labels"] = string.Join(",", Labels),
            ["layers"] = string.Join(",", Layers),
            ["rank"] = Rank.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["base_sha256"] = BaseSha256,
        });
        var info = new Dictionary<string, object?>
        {
            ["format"] = FormatName,
            ["labels"] = Labels,
            ["layers"] = Layers,
            ["rank"] = Rank,
            ["base_sha256"] = BaseSha256,
        };
        foreach (var (k, v) in facts) info[k] = v;
        File.WriteAllText(Path.Combine(dir, InfoFile),
            JsonSerializer.Serialize(info, new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
    }

    /// <summary>Reads a delta written by <see cref="Save"/>; every problem names the file and the field.</summary>
    public static EncoderDelta Load(string dir)
    {
        var path = Path.Combine(dir, WeightsFile);
        if (!File.Exists(path)) throw new ModelLoadException($"Encoder delta not found: {path}", path);
        using var file = SafeTensorsFile.Open(path);
        string Meta(string key) => file.Metadata.TryGetValue(key, out var v) && !string.IsNullOrEmpty(v)
            ? v : throw new ModelLoadException($"{path}: metadata field '{key}' is missing", path, key);
        if (Meta("format") != FormatName)
            throw new ModelLoadException($"{path}: format '{Meta("format")}' is not {FormatName}", path, "format");
        var labels = Meta("labels").Split(',');
        int rank = int.TryParse(Meta("rank"), out var r) && r > 0 ? r : throw new ModelLoadException($"{path}: metadata field 'rank' is not a positive integer", path, "rank");
        var layers = Meta("layers").Split(',').Select(s => int.TryParse(s, out var l) && l >= 0 ? l
            : throw new ModelLoadException($"{path}: metadata field 'layers' is not a list of layer indices", path, "layers")).ToList();
        var expected = ExpectedNames(layers).ToHashSet();
        var problems = expected.Where(n => !file.Entries.ContainsKey(n)).Select(n => $"missing key '{n}'")
            .Concat(file.Entries.Keys.Where(n => !expected.Contains(n)).Select(n => $"unexpected key '{n}'")).ToList();
        if (problems.Count > 0) throw new ModelLoadException($"{path}: {string.Join("; ", problems)}", path, problems[0]);
        var tensors = new Dictionary<string, Tensor>();
        foreach (var name in file.Entries.Keys) tensors[name] = file.Load(name, ScalarType.Float32);
        foreach (int l in layers)
            foreach (var m in Maps)
            {
                var (a, b) = (tensors[LoraA(l, m)], tensors[LoraB(l, m)]);
                if (a.shape.Length != 2 || b.shape.Length != 2 || a.shape[0] != rank || b.shape[1] != rank)
                    throw new ModelLoadException($"{path}: {LoraA(l, m)} [{string.Join(",", a.shape)}] and {LoraB(l, m)} [{string.Join(",", b.shape)}] are not rank {rank} factors", path, LoraA(l, m));
            }
        var cls = tensors[ClassifierWeight];
        if (cls.shape.Length != 2 || cls.shape[0] != labels.Length || tensors[ClassifierBias].shape[0] != labels.Length)
            throw new ModelLoadException($"{path}: classifier.weight [{string.Join(",", cls.shape)}] does not match {labels.Length} labels", path, ClassifierWeight);
        return new EncoderDelta(layers, labels, rank, Meta("base_sha256"), tensors);
    }

    /// <summary>Refuses an encoder whose weights are not the ones the delta was trained on.</summary>
    public void CheckBase(string encoderWeightsPath, string deltaPath)
    {
        var actual = HeadTrainer.Sha256(encoderWeightsPath);
        if (actual != BaseSha256)
            throw new ModelLoadException(
                $"{deltaPath} was trained on base weights with SHA-256 {BaseSha256}, but {encoderWeightsPath} has {actual}; retrain it with `fleet train-default`",
                deltaPath, "base_sha256");
    }

    /// <summary>Number of stored values (the committed file is this × 4 bytes plus its header).</summary>
    public long Parameters => Tensors.Values.Sum(t => t.numel());

    public void Dispose()
    {
        foreach (var t in Tensors.Values) t.Dispose();
    }
}
