namespace Marketplace.Grains;

/// <inheritdoc cref="ICallPipelineGrain"/>
[StatelessWorker]
public sealed class CallPipelineGrain(CallPipeline pipeline) : Grain, ICallPipelineGrain
{
    public Task<CallResult> CallAsync(CallRequest request) => pipeline.CallAsync(request);
}
