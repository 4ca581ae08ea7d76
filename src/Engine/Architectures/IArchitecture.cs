using System.Text.Json;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Architectures;

/// <summary>What kind of parameter a role is: random initialisation and dtype conversion treat them alike, tests do not.</summary>
public enum WeightKind { Matrix, Bias, Embedding, NormWeight, NormBias }

/// <summary>
/// One parameter of an architecture: its role (the model's own name for it, e.g. <c>L0.q</c>), its Hugging Face
/// state-dict key and shape. <see cref="InBody"/>: the key sits under the body's prefix (<c>bert.</c>, <c>roberta.</c>…)
/// in a *ForSequenceClassification checkpoint and unprefixed in a bare encoder's.
/// </summary>
public sealed record WeightRole(string Role, string Key, long[] Shape, WeightKind Kind, bool InBody = true);

/// <summary>
/// The roles → keys → shapes of one configuration: load, write, random init and ONNX import all use this one table,
/// so they cannot disagree.
/// </summary>
public sealed record WeightTable(string BodyPrefix, IReadOnlyList<WeightRole> Roles)
{
    public WeightRole this[string role] => Roles.First(r => r.Role == role);

    public bool Has(string role) => Roles.Any(r => r.Role == role);

    /// <summary>The checkpoint key of a role, with <paramref name="prefix"/> (the body prefix or "") on body keys.</summary>
    public string KeyOf(WeightRole role, string prefix) => role.InBody ? prefix + role.Key : role.Key;

    /// <summary>The body prefix these keys use: <see cref="BodyPrefix"/> when the checkpoint has it, else "" (a bare encoder).</summary>
    public string PrefixIn(IReadOnlyCollection<string> keys)
    {
        var first = Roles.First(r => r.InBody);
        return keys.Contains(BodyPrefix + first.Key) ? BodyPrefix : "";
    }
}

/// <summary>
/// One architecture family: everything that differs between BERT, DistilBERT, RoBERTa, XLM-R, ELECTRA … lives behind
/// this, so adding a family is a new folder plus one line in <see cref="ArchitectureRegistry"/>, and never touches a
/// rule. A family owns its config.json parsing (its own field names), its weight table, the model it builds (a forward
/// through <see cref="Ops.TensorOps"/>), and its tokenizer kind.
/// </summary>
public interface IArchitecture
{
    /// <summary>The values of config.json's "architectures" this family reads.</summary>
    IReadOnlyList<string> Names { get; }

    /// <summary>The config.json "model_type" values this family reads.</summary>
    IReadOnlyList<string> ModelTypes { get; }

    /// <summary>The tokenizer the family's checkpoints come with ("wordpiece", "byte-level-bpe", "sentencepiece").</summary>
    string TokenizerKind { get; }

    /// <summary>
    /// The architecture a config without "architectures" means, decided by the weights present; or an error naming
    /// what is missing when they do not decide it.
    /// </summary>
    string ResolveFromWeights(IReadOnlyCollection<string> keys, string configPath);

    /// <summary>Reads the family's config fields (<paramref name="architecture"/> is one of <see cref="Names"/>).</summary>
    ModelConfig ParseConfig(JsonElement root, string architecture, string path);

    /// <summary>The parameters of <paramref name="config"/>; <paramref name="withClassifier"/>: a bare encoder with a linear head.</summary>
    WeightTable Weights(ModelConfig config, bool withClassifier);

    /// <summary>Keys a checkpoint may hold that the model does not use (buffers, an unused pooler).</summary>
    bool IsIgnorable(string key, ModelConfig config);

    /// <summary>The model from its weights by role (all on one device and dtype; the model owns them).</summary>
    ITextModel Build(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights);

    /// <summary>
    /// Whether the family's model runs its position-wise layers on the real tokens only in a batch of several lengths
    /// (<see cref="Ops.TokenPacking"/>), so that padding costs only attention: the planner then cuts fuller batches.
    /// </summary>
    bool PacksTokens => false;
}
