export default class Client {

  async newActionWithOptions(request: $_model.NewActionRequest, runtime: $dara.RuntimeOptions): Promise<$_model.NewActionResponse> {
    request.validate();
    let query = { };
    if (!$dara.isNull(request.productCode)) {
      query["ProductCode"] = request.productCode;
    }

    let body : {[key: string ]: any} = { };
    if (!$dara.isNull(request.pictureUrl)) {
      body["PictureUrl"] = request.pictureUrl;
    }

    let params = new $OpenApiUtil.Params({
      action: "NewAction",
      method: "POST",
      style: "RPC",
    });
  }

}
