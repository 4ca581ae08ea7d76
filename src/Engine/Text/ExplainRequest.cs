using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Rules;

namespace AttributionFleet.Engine.Text;

/// <summary>How to explain: method, target and output, rule, precision, references. Strings as users write them.</summary>
public sealed record ExplainRequest
{
    public string Method { get; init; } = "deeplift";
    /// <summary>Label name or class index; null explains each text's predicted class; <see cref="AllTargets"/> explains every class.</summary>
    public string? Target { get; init; }
    public string Output { get; init; } = "centered-logit";
    public string SoftmaxRule { get; init; } = "exact";
    public string Precision { get; init; } = "float32";
    public int Steps { get; init; } = 50;
    public string Integration { get; init; } = "gauss-legendre";
    /// <summary>pad, mask, unk, zero, or a text of the same token length; several for the SHAP methods.</summary>
    public IReadOnlyList<string> References { get; init; } = new[] { "pad" };
    public int Samples { get; init; } = 20;
    /// <summary>Texts per forward pass (after bucketing by token length).</summary>
    public int BatchSize { get; init; } = 16;
    /// <summary>Truncation length; null means the model's maximum.</summary>
    public int? MaxLength { get; init; }
    /// <summary>Memory a DeepLift pass may take (MiB; see <see cref="MethodOptions.PassMemoryBytes"/>); null: the device's default.</summary>
    public int? PassMemoryMB { get; init; }
    /// <summary>
    /// Memory (MiB) the process's DeepLift reference cache may hold (<see cref="ReferenceCache.Shared"/>; setting it
    /// resizes that cache); 0: no cache (every reference recorded per pass); null: as configured (default 1 GiB).
    /// </summary>
    public int? ReferenceCacheMB { get; init; }

    /// <summary>The <see cref="Target"/> that explains every output of the classifier (one attribution row per class).</summary>
    public const string AllTargets = "all";
    public bool ExplainsEveryTarget => string.Equals(Target, AllTargets, StringComparison.OrdinalIgnoreCase);
    /// <summary>|p_c(x) − p_c(x0)| below this flags the result's reference as weak (see <see cref="ReferenceCheck"/>).</summary>
    public double WeakReferenceThreshold { get; init; } = DefaultWeakReferenceThreshold;
    public const double DefaultWeakReferenceThreshold = 0.05;
    /// <summary>Also measure the scores' faithfulness (comprehensiveness, sufficiency, AOPC; see <see cref="Faithfulness.FaithfulnessEvaluator"/>).</summary>
    public bool Faithfulness { get; init; }

    public static readonly string[] Outputs = { "logit", "centered-logit", "probability" };
    public static readonly string[] SoftmaxRules = { "exact", "rescale", "row-mean" };
    public static readonly string[] Precisions = { "float32", "float64", "float16", "bfloat16" };
    public static readonly string[] Integrations = { "gauss-legendre", "riemann-trapezoid" };

    public OutputKind ParseOutput() => Output switch
    {
        "logit" => OutputKind.Logit,
        "centered-logit" => OutputKind.CenteredLogit,
        "probability" => OutputKind.Probability,
        _ => throw Bad("output", Output, Outputs),
    };

    public SoftmaxRuleKind ParseSoftmaxRule() => SoftmaxRule switch
    {
        "exact" => SoftmaxRuleKind.Exact,
        "rescale" => SoftmaxRuleKind.Rescale,
        "row-mean" => SoftmaxRuleKind.RowMean,
        _ => throw Bad("softmax_rule", SoftmaxRule, SoftmaxRules),
    };

    public Precision ParsePrecision() => Precision switch
    {
        "float32" => Attribution.Precision.Float32,
        "float64" => Attribution.Precision.Float64,
        "float16" => Attribution.Precision.Float16,
        "bfloat16" => Attribution.Precision.BFloat16,
        _ => throw Bad("precision", Precision, Precisions),
    };

    public IntegrationRule ParseIntegration() => Integration switch
    {
        "gauss-legendre" => IntegrationRule.GaussLegendre,
        "riemann-trapezoid" => IntegrationRule.RiemannTrapezoid,
        _ => throw Bad("integration", Integration, Integrations),
    };

    /// <summary>Checks every field up front, so a bad request fails before any work.</summary>
    public void Validate()
    {
        AttributionMethods.Create(Method);
        ParseOutput();
        ParseSoftmaxRule();
        ParsePrecision();
        ParseIntegration();
        if (Steps < 1 || Steps > 10_000) throw new AttributionRequestException("steps", $"steps must be between 1 and 10000, got {Steps}");
        if (Samples < 1 || Samples > 10_000) throw new AttributionRequestException("samples", $"samples must be between 1 and 10000, got {Samples}");
        if (BatchSize < 1) throw new AttributionRequestException("batch_size", $"batch_size must be positive, got {BatchSize}");
        if (References.Count == 0) throw new AttributionRequestException("reference", "at least one reference is needed");
        if (MaxLength is < 2) throw new AttributionRequestException("max_length", $"max_length must be at least 2, got {MaxLength}");
        if (!double.IsFinite(WeakReferenceThreshold) || WeakReferenceThreshold < 0 || WeakReferenceThreshold > 1)
            throw new AttributionRequestException("weak_reference_threshold", $"weak_reference_threshold must be a probability between 0 and 1, got {WeakReferenceThreshold}");
        if (ReferenceCacheMB is < 0) throw new AttributionRequestException("reference_cache_mb", $"reference_cache_mb must be 0 or more, got {ReferenceCacheMB}");
        if (PassMemoryMB is < 1) throw new AttributionRequestException("pass_memory_mb", $"pass_memory_mb must be at least 1, got {PassMemoryMB}");
    }

    private static AttributionRequestException Bad(string field, string value, string[] allowed) =>
        new(field, $"unknown {field} '{value}'; expected one of: {string.Join(", ", allowed)}");
}
